"""Cross-key checks of a workflow config that has passed the schema, and the model lists of the analyses.

The schema (workflow/schemas/config.schema.yaml, defaults filled in) checks each key alone; `WorkflowConfig.check`
checks what needs several keys or a look at the models and datasets: names that refer to other sections, model
definitions timm (or a python factory) can build without weights, analyses listed for models they do not apply to,
and analyses asking for more images than their split holds. Every failure is a `ConfigError` whose message names
the key, the problem and the fix. workflow/rules/common.smk runs the checks at parse time, so every bad config
fails `snakemake -n`, and takes the model lists (`analysis_models`, `head_subset_cnn`, `model_kind`) from here.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from seelike.config.measures import MEASURE_SETTINGS, MEASURES
from seelike.data.samples import split_counts
from seelike.data.sources import DatasetConfigError, open_source
from seelike.models.families import (
    model_class,
    model_family,
    model_refusal,
    model_structure,
    model_tap_names,
    timm_knows,
)

# Analyses with a `models:` list (null = every model they apply to) and, with `n_images`, the images they read.
LISTED_SECTIONS = ("attention", "erf", "skip", "probes", "localisation")
N_IMAGES_SECTIONS = ("cka", "attention", "erf", "skip", "localisation")
SECTION_NAMES = {
    "attention": "mean attention distance",
    "erf": "the effective receptive field",
    "skip": "skip-connection statistics",
    "probes": "linear probes",
    "localisation": "localisation",
}
DIGITS_IMAGES = 1797  # scikit-learn's digits
# seelike.cka.MIN_BATCH (that module imports torch): minibatches of fewer images are dropped by every measure
MIN_BATCH_IMAGES = 4
# the measures reading cka.knn_k (seelike.similarity.KNN_MEASURES)
KNN_MEASURES = tuple(m for m, keys in MEASURE_SETTINGS.items() if "knn_k" in keys)


class ConfigError(ValueError):
    """A config that validates against the schema but cannot run; the message names the key and the fix."""


class WorkflowConfig:
    """A schema-validated config (defaults filled in) with its cross-key checks and model lists.

    `config` is used in place, not copied: `check` sets `arch` of every python-source model to its factory
    (the architecture name the rest of the workflow reads).
    """

    def __init__(self, config: dict[str, Any]):
        self.config = config

    # ------------------------------------------------------------------ names
    @property
    def models(self) -> list[str]:
        """The configured model names, in config order."""
        return list(self.config["models"])

    @property
    def analysis_dataset(self) -> str:
        """The dataset every analysis but the probes reads (`analysis_dataset`)."""
        return self.config["analysis_dataset"]

    @property
    def probe_dataset(self) -> str:
        """The dataset the probes read: `probes.dataset`, or null for `analysis_dataset`."""
        return self.config["probes"]["dataset"] or self.analysis_dataset

    # ------------------------------------------------------------------ the checks
    def check(self) -> None:
        """Every cross-key check, in the order a dry run makes them; raises `ConfigError` at the first failure."""
        self.check_dataset_names()
        self.check_models()
        self.check_pairs()
        self.check_measures()
        self.check_knn_k()
        self.check_bures_taps()
        self.check_model_lists()
        self.check_datasets()

    def check_dataset_names(self) -> None:
        """analysis_dataset and probes.dataset name configured datasets."""
        datasets = self.config["datasets"]
        if self.analysis_dataset not in datasets:
            raise ConfigError(
                f"config: analysis_dataset {self.analysis_dataset!r} is not a key of datasets {sorted(datasets)}"
            )
        if self.probe_dataset not in datasets:
            raise ConfigError(
                f"config: probes.dataset {self.probe_dataset!r} is not a key of datasets {sorted(datasets)}; "
                "name a configured dataset, or null for analysis_dataset"
            )

    def check_models(self) -> None:
        """Every model can be built without weights (timm architecture and kwargs, python factory and taps),
        and the keys its source reads are there (train.dataset, checkpoint path)."""
        datasets, models = self.config["datasets"], self.config["models"]
        for name, spec in models.items():
            if spec["source"] == "python":
                # the factory imports and returns an nn.Module, data_config, path, every tap pattern matches a
                # module (seelike.models.load.check_python_spec); arch is set to the factory, the architecture
                # name the rest of the workflow reads (model.json records the same)
                from seelike.models.load import ModelConfigError, check_python_spec

                try:
                    check_python_spec(name, spec)
                except ModelConfigError as e:
                    raise ConfigError(f"config: {e}") from e
                spec.setdefault("arch", spec["factory"])
                try:
                    model_family(spec)
                except Exception as e:
                    raise ConfigError(
                        f"config: models.{name}: the structure of {spec['factory']!r} with kwargs "
                        f"{spec.get('kwargs') or {}} could not be read ({type(e).__name__}: {e}); fix "
                        f"models.{name}.factory or .kwargs"
                    ) from e
                continue
            for key in ("factory", "taps"):
                if key in spec:
                    raise ConfigError(
                        f"config: models.{name}.{key} is read for source: python only (source: "
                        f"{spec['source']} builds timm's {spec['arch']!r} with its family's taps); drop it, "
                        "or set source: python"
                    )
            arch = spec["arch"].split(".")[0]
            if not timm_knows(arch):
                import timm  # the names it knows, for the message

                close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.6)
                raise ConfigError(
                    f"config: models.{name}.arch {spec['arch']!r} is not a timm architecture"
                    + (f" (close names: {', '.join(close)})" if close else "")
                    + '; list the names timm knows with: python -c "import timm; '
                    + f"print(timm.list_models('*{arch.split('_')[0]}*'))\""
                )
            if spec["source"] == "train":
                if "train" not in spec:
                    raise ConfigError(
                        f"config: models.{name} has source: train but no train: section; add train: "
                        "{dataset: <a key of datasets>}"
                    )
                if spec["train"]["dataset"] not in datasets:
                    raise ConfigError(
                        f"config: models.{name}.train.dataset {spec['train']['dataset']!r} is not a key of "
                        f"datasets {sorted(datasets)}"
                    )
            if spec["source"] == "checkpoint":
                if "path" not in spec:
                    raise ConfigError(
                        f"config: models.{name} has source: checkpoint but no path:; set models.{name}.path "
                        "to the weights file"
                    )
                if not Path(spec["path"]).expanduser().is_file():
                    raise ConfigError(
                        f"config: models.{name}.path {spec['path']!r} is not a file (source: checkpoint reads "
                        "its weights from it; relative paths start at the working directory "
                        f"{str(Path.cwd())!r}); fix models.{name}.path, or use source: timm to download "
                        "the weights"
                    )
            try:
                model_family(spec)
            except Exception as e:
                raise ConfigError(
                    f"config: models.{name}: timm cannot build {spec['arch']!r} with kwargs "
                    f"{spec.get('kwargs') or {}} ({type(e).__name__}: {e}); fix models.{name}.arch or .kwargs"
                ) from e

    def check_pairs(self) -> None:
        """cka.pairs and cka.per_block name configured models; a per-block pair is one architecture."""
        cka, models = self.config["cka"], self.config["models"]
        self.check_pair_spec()
        for key in ("pairs", "per_block"):
            if not isinstance(cka[key], list):
                continue
            for pair in cka[key]:
                for m in pair:
                    if m not in models:
                        raise ConfigError(
                            f"config: cka.{key} entry {pair} names {m!r}, not a key of models {sorted(models)}"
                        )
        for a, b in cka["per_block"]:
            if (models[a]["arch"], models[a].get("kwargs") or {}) != (
                models[b]["arch"],
                models[b].get("kwargs") or {},
            ):
                raise ConfigError(
                    f"config: cka.per_block entry {[a, b]} compares different architectures "
                    f"({models[a]['arch']} vs {models[b]['arch']} or different kwargs); per-block CKA needs two "
                    "checkpoints of one architecture: use cka.pairs for a cross-model matrix"
                )

    def check_pair_spec(self) -> None:
        """cka.pairs as `all` or groups: two models at least; groups name configured models, each in one group."""
        pairs, models = self.config["cka"]["pairs"], self.models
        if pairs == "all" and len(models) < 2:
            raise ConfigError(
                f"config: cka.pairs: all compares every pair of models, but only {models} is configured; add "
                "models, or set cka.pairs: []"
            )
        if isinstance(pairs, list):
            for pair in pairs:
                if len(pair) == 2 and pair[0] == pair[1]:
                    raise ConfigError(
                        f"config: cka.pairs entry {pair} compares a model with itself; every model's "
                        "self-similarity is always computed (Fig 1): drop the entry"
                    )
            return
        if not isinstance(pairs, dict):
            return
        groups, seen = pairs["groups"], {}
        for group, names in groups.items():
            for m in names:
                if m not in models:
                    raise ConfigError(
                        f"config: cka.pairs.groups.{group} names {m!r}, not a key of models {sorted(models)}"
                    )
                if m in seen:
                    raise ConfigError(
                        f"config: cka.pairs.groups: {m!r} is in groups {seen[m]!r} and {group!r}; a model "
                        "belongs to one group of a comparison (pairs are taken across groups): remove it from one"
                    )
                seen[m] = group
        if len(groups) < 2:
            raise ConfigError(
                f"config: cka.pairs.groups has {len(groups)} group; pairs are taken across groups: name two or "
                "more (e.g. {vits: [...], cnns: [...]}), or use cka.pairs: all"
            )

    # ------------------------------------------------------------------ model pairs
    @property
    def cross_pairs(self) -> list[tuple[str, str]]:
        """The cross-model comparisons of cka.pairs, oriented as asked, each unordered pair once: the listed
        [a, b] pairs; `all`: every pair of models in config order; {groups: {name: [models]}}: every model of
        each group against every model of each later group."""
        pairs, models = self.config["cka"]["pairs"], self.models
        if pairs == "all":
            asked = [(a, b) for i, a in enumerate(models) for b in models[i + 1 :]]
        elif isinstance(pairs, dict):
            groups = list(pairs["groups"].values())
            asked = [
                (a, b)
                for i, first in enumerate(groups)
                for later in groups[i + 1 :]
                for a in first
                for b in later
            ]
        else:
            asked = [tuple(p) for p in pairs]
        out, seen = [], set()
        for a, b in asked:
            if frozenset((a, b)) not in seen:
                seen.add(frozenset((a, b)))
                out.append((a, b))
        return out

    @property
    def pairs_listed(self) -> bool:
        """cka.pairs lists its pairs (each gets a Fig 2 figure); `all` and groups draw the atlas instead."""
        return isinstance(self.config["cka"]["pairs"], list)

    def stored_pair(self, a: str, b: str) -> tuple[str, str]:
        """The pair as its tables store it: the models in config order, so that each unordered pair is computed
        once (results/cka/{dataset}/{a}__{b}.parquet) and read as the transpose the other way round
        (seelike.tables.oriented)."""
        order = self.models
        return (a, b) if order.index(a) <= order.index(b) else (b, a)

    def check_measures(self) -> None:
        """cka.measures names measures of seelike.similarity.MEASURES (the one list of them)."""
        unknown = [m for m in self.config["cka"]["measures"] if m not in MEASURES]
        if unknown:
            hint = difflib.get_close_matches(unknown[0], MEASURES, n=2, cutoff=0.4)
            raise ConfigError(
                f"config: cka.measures lists {unknown}, not similarity measures"
                + (f" (did you mean {hint}?)" if hint else "")
                + f"; choose from {list(MEASURES)}"
            )

    def check_knn_k(self) -> None:
        """cka.knn_k below every kept minibatch's size − 1 when mutual_knn or cknna is asked for: k neighbours
        per image, itself excluded, must leave some image out (the minibatches as the cache makes them: of
        cka.batch_size, the last one the remainder; one under MIN_BATCH_IMAGES is dropped)."""
        cka = self.config["cka"]
        asked = [m for m in KNN_MEASURES if m in cka["measures"]]
        n, size, k = cka["n_images"], cka["batch_size"], cka["knn_k"]
        sizes = [s for s in (min(size, n - i) for i in range(0, n, size)) if s >= MIN_BATCH_IMAGES]
        if not asked or not sizes or k < min(sizes) - 1:
            return
        smallest = min(sizes)
        if smallest == size:
            why, fix = f"cka.batch_size is {size}", "raise cka.batch_size"
        elif n < size:
            why = f"cka.n_images is {n} (one minibatch, below cka.batch_size {size})"
            fix = "raise cka.n_images"
        else:
            why = (
                f"the last minibatch holds {smallest} images (cka.n_images {n} is not a multiple of "
                f"cka.batch_size {size})"
            )
            fix = "make cka.n_images a multiple of cka.batch_size"
        raise ConfigError(
            f"config: cka.knn_k is {k} but {why}: {' and '.join(asked)} need knn_k < the minibatch size − 1 "
            f"(an image's k nearest neighbours must leave some image out); lower cka.knn_k to at most "
            f"{smallest - 2}, or {fix}"
        )

    def check_bures_taps(self) -> None:
        """cka.bures_taps as a list: every name a tap of some compared model (names from weightless builds;
        a family whose taps only a forward pass reveals is checked at run time instead)."""
        cka = self.config["cka"]
        listed = cka["bures_taps"]
        if "bures" not in cka["measures"] or isinstance(listed, str):
            return
        names = {n for spec in self.config["models"].values() for n in model_tap_names(spec)}
        unknown = [t for t in listed if t not in names]
        if names and unknown:
            hint = difflib.get_close_matches(unknown[0], sorted(names), n=3)
            raise ConfigError(
                f"config: cka.bures_taps lists {unknown[:5]}, not taps of any model"
                + (f" (did you mean {hint}?)" if hint else "")
                + "; list names from results/models/<model>/taps.csv, or set cka.bures_taps: block_outputs"
            )

    def check_model_lists(self) -> None:
        """Each analysis's `models:` list names configured models it applies to (`refusal`);
        attention.head_subsets.cnn names a configured model."""
        models = self.config["models"]
        for section in LISTED_SECTIONS:
            listed = self.config[section]["models"]
            unknown = [m for m in listed or [] if m not in models]
            if unknown:
                raise ConfigError(
                    f"config: {section}.models names {unknown}, not keys of models {sorted(models)}; list "
                    f"configured model names, or set {section}.models: null for the default list"
                )
        for section in LISTED_SECTIONS:
            for m in self.config[section]["models"] or []:
                why = self.refusal(m, section)
                if why:
                    raise ConfigError(
                        f"config: {section}.models lists {m!r} ({models[m]['arch']}), but "
                        f"{SECTION_NAMES[section]} does not apply to it: {why}; drop {m!r} from "
                        f"{section}.models (or set {section}.models: null for every model it applies to)"
                    )
        cnn = self.config["attention"]["head_subsets"]["cnn"]
        if cnn is not None and cnn not in models:
            raise ConfigError(
                f"config: attention.head_subsets.cnn {cnn!r} is not a key of models {sorted(models)}; name a "
                "configured CNN, or null for the first CNN"
            )

    def split_sizes(self, name: str) -> dict[str, int] | None:
        """Images per split of dataset `name`'s sample list, as `seelike.data.samples.build_samples` makes it
        (`seelike.data.samples.split_counts`) but without reading an image (image folders are listed); None
        for torchvision sources."""
        ds = self.config["datasets"][name]
        if ds["source"] == "digits":
            splits: list[str | None] = [None] * DIGITS_IMAGES
        elif ds["source"] == "torchvision":
            return None
        else:
            if ds["source"] == "imagefolder" and "root" not in ds:
                raise ConfigError(
                    f"config: datasets.{name} has source: imagefolder but no root:; set datasets.{name}.root "
                    "to a folder laid out as <root>/<class>/<image> (or <root>/<split>/<class>/<image>)"
                )
            try:
                splits = [split for _, _, split in open_source(ds).rows()]
            except DatasetConfigError as e:
                raise ConfigError(
                    f"config: datasets.{name}.root {ds.get('root')!r}: {e}".replace(
                        "datasets.<name>", f"datasets.{name}"
                    )
                ) from e
        return split_counts(splits, ds)

    def check_datasets(self) -> None:
        """Every dataset a run reads exists; the analyses ask for no more images than their split holds."""
        cfg = self.config
        analysis, probe = self.analysis_dataset, self.probe_dataset
        used = [analysis, probe] + [
            s["train"]["dataset"] for s in cfg["models"].values() if s["source"] == "train"
        ]
        sizes = {name: self.split_sizes(name) for name in dict.fromkeys(used)}
        held = sizes[analysis]
        if held is None:  # torchvision: counted when the sample list is made
            return
        where = f"dataset {analysis!r} (analysis_dataset)"
        hint = "after test_fraction / max_train / max_test"
        wanted = [("cka", "n_images", cfg["cka"]["split"])]
        wanted += [
            (s, "n_images", cfg[s]["split"])
            for s in N_IMAGES_SECTIONS[1:]
            if self.analysis_models(s)
        ]
        probe_held = sizes[probe]
        if (
            self.analysis_models("probes")
            and cfg["probes"]["n_test"] is not None
            and probe_held is not None
        ):
            n, have = cfg["probes"]["n_test"], probe_held.get("test", 0)
            if n > have:
                raise ConfigError(
                    f"config: probes.n_test is {n} but the 'test' split of dataset {probe!r} (probes.dataset) "
                    f"holds {have} images ({hint}); lower probes.n_test to at most {have}, or null for all"
                )
        for dataset in self.atlas_datasets:
            if dataset != analysis:
                self.check_atlas_dataset(dataset)
        for section, key, split in wanted:
            if split not in held:
                raise ConfigError(
                    f"config: {section}.split {split!r} is not a split of {where}, which has {sorted(held)}; "
                    f"set {section}.split to one of them"
                )
            n = cfg[section][key]
            if n > held[split]:
                raise ConfigError(
                    f"config: {section}.{key} is {n} but the {split!r} split of {where} holds {held[split]} "
                    f"images ({hint}); lower {section}.{key} to at most {held[split]}, or give the split more "
                    "images"
                )

    @property
    def atlas_datasets(self) -> list[str]:
        """The datasets an atlas is built on (`atlas.datasets`, null = the analysis dataset); none without a
        cross pair."""
        if not self.cross_pairs:
            return []
        return list(self.config["atlas"]["datasets"] or [self.analysis_dataset])

    def check_atlas_dataset(self, dataset: str) -> None:
        """An atlas dataset is configured and its cka.split holds cka.n_images images (its caches can be made)."""
        cfg = self.config
        if dataset not in cfg["datasets"]:
            raise ConfigError(
                f"config: atlas.datasets names {dataset!r}, not a key of datasets {sorted(cfg['datasets'])}; "
                "configure it under datasets, or drop it from atlas.datasets"
            )
        held, split, n = self.split_sizes(dataset), cfg["cka"]["split"], cfg["cka"]["n_images"]
        if held is not None and held.get(split, 0) < n:
            raise ConfigError(
                f"config: atlas.datasets names {dataset!r}, whose {split!r} split holds {held.get(split, 0)} images "
                f"but its caches need cka.n_images = {n}; give dataset {dataset!r} a {split!r} split of {n} images "
                "or more, or drop it from atlas.datasets"
            )

    # ------------------------------------------------------------------ families and model lists
    def family(self, name: str) -> str:
        """The tap family of configured model `name`, decided by its structure (seelike.models.families)."""
        return model_family(self.config["models"][name])

    def model_kind(self, name: str) -> str:
        """vit, cnn or other: how the claims read configured model `name` (seelike.models.families.model_class)."""
        s = model_structure(self.config["models"][name])
        return model_class(s.family, s.taps)

    def listed_taps(self, section: str, name: str) -> list[str] | None:
        """The taps the config names for `section` and model `name` (erf.taps, localisation.taps, probes.taps)."""
        taps = (self.config[section].get("taps") or {}).get(name)
        return [taps] if isinstance(taps, str) else taps

    def refusal(self, name: str, section: str) -> str | None:
        """Why `section` cannot run on configured model `name`, or None: decided from its family record and its
        taps' layouts and, for skip, its residual sums (seelike.models.families.model_refusal), the same
        decisions the rules make."""
        return model_refusal(
            self.config["models"][name],
            section,
            self.listed_taps(section, name),
            self.config[section],
        )

    def default_models(self, section: str) -> list[str]:
        """Null `models:` of an analysis: every model it applies to (`refusal`), in config order."""
        return [m for m in self.models if self.refusal(m, section) is None]

    def analysis_models(self, section: str) -> list[str]:
        """The models `section` (attention, erf, skip, probes, localisation) runs on: listed, or the default."""
        listed = self.config[section]["models"]
        return list(listed) if listed is not None else self.default_models(section)

    def head_subset_cnn(self) -> str | None:
        """The CNN of Fig 5: configured, or the first CNN-kind model; None when there is none or Fig 5 is off."""
        hs = self.config["attention"]["head_subsets"]
        if not hs["enabled"]:
            return None
        if hs["cnn"] is not None:
            return hs["cnn"]
        return next((m for m in self.models if self.model_kind(m) == "cnn"), None)

    def head_subset_models(self) -> list[str]:
        """The attention models of Fig 5: those whose heads' outputs are their own (global attention without
        talking heads: not Swin's windows, not CaiT), none when Fig 5 is off or has no CNN."""
        if self.head_subset_cnn() is None:
            return []
        return [
            m
            for m in self.analysis_models("attention")
            if model_refusal(self.config["models"][m], "head_subsets") is None
        ]


def check_config(config: dict[str, Any]) -> WorkflowConfig:
    """Run every cross-key check on a schema-validated `config` (see `WorkflowConfig.check`) and return it
    wrapped; raises `ConfigError` naming the key, the problem and the fix."""
    checked = WorkflowConfig(config)
    checked.check()
    return checked
