"""The delete-one(-group) jackknife SE of any statistic from its leave-one-out replicates (numpy only: the claims
import it and must not import torch).

SE² = (k−1)/k · Σ_i (θ₍₋ᵢ₎ − mean_i θ₍₋ᵢ₎)² (Efron & Tibshirani 1993, eq. 11.5), the deleted units being images,
groups of images or minibatches. The ERF sizes (`seelike.analyses.receptive_field`) and the claims' ratios of them
take their SEs from here; CKA tables resample their grouped HSIC terms in `seelike.analyses.replicates`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["jackknife_se"]


def jackknife_se(replicates, axis: int = 0) -> np.ndarray | float:
    """Delete-one jackknife SE from the k leave-one-out replicates along `axis` (a float for 1-D input). NaN with
    fewer than 2 replicates, and wherever a replicate is not finite (a statistic undefined without some unit has
    no jackknife SE)."""
    r = np.moveaxis(np.asarray(replicates, dtype=np.float64), axis, 0)
    k = r.shape[0]
    if k < 2:
        se = np.full(r.shape[1:], np.nan)
    else:
        with np.errstate(invalid="ignore"):
            se = np.sqrt((k - 1) / k * ((r - r.mean(0)) ** 2).sum(0))
        se = np.where(np.isfinite(r).all(0), se, np.nan)
    return float(se) if se.ndim == 0 else se
