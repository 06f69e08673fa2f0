"""The similarity measures' names and the `cka` config keys each reads: what the config checks and the workflow's
params functions need of `seelike.similarity` at parse time, without importing torch (seelike.similarity
re-exports both)."""

from __future__ import annotations

__all__ = ["MEASURES", "MEASURE_SETTINGS"]

MEASURES: tuple[str, ...] = (
    "linear_cka",
    "linear_cka_biased",
    "rbf_cka",
    "dcor",
    "rsa",
    "linear_cka_minus_pc",
    "bures",
    "mutual_knn",
    "cknna",
)
# the config keys (of `cka`) each measure reads besides the caches: a job's params hold only the requested
# measures' settings, so editing the settings of a measure not computed reruns nothing
MEASURE_SETTINGS: dict[str, tuple[str, ...]] = {
    "rbf_cka": ("rbf_sigma",),
    "rsa": ("rsa_correlation",),
    "linear_cka_minus_pc": ("pcs_removed",),
    "bures": ("bures_taps",),
    "mutual_knn": ("knn_k", "knn_metric"),
    "cknna": ("knn_k", "knn_metric"),
}
