"""seelike: the analyses of Raghu et al. 2021, "Do Vision Transformers See Like CNNs?", for any timm model.

Public entry points live in submodules: `seelike.cka` (minibatch CKA), `seelike.models` (acquisition, taps),
`seelike.data` (sample lists and loaders), `seelike.analyses` (one module per analysis, the activation cache among them), `seelike.api`
(`compare(...)` for notebooks).
"""

__version__ = "0.1.0"
