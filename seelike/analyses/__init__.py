"""The analyses, one module per analysis; each streams images through a model once (or reads the activation
cache) and returns tidy tables:

- `cache`: the activation cache (per-minibatch Grams of every tap), `cka_tables`: CKA tables from caches (Figs 1, 2,
  12);
- `attention`: mean attention distances (Figs 3, 4), `head_subsets`: head-subset CKA with a CNN (Fig 5);
- `receptive_field`: effective receptive fields (Fig 6), `skip`: skip-connection statistics (Fig 7);
- `localisation`: token vs input-patch CKA (Figs 9, 10);
- `probes`: probe feature store and probe tables (Figs 11, 13), `ridge`: the closed-form ridge probes.

`stream` is what they share: moving batches to the device, stopping after n images, one progress protocol.
"""
