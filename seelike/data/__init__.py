"""Datasets: image sources (a registry by `source`), the fixed sample list, and per-model loaders."""
