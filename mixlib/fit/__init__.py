"""Fitting weighted points on a Dask cluster: the points themselves (:mod:`~mixlib.fit.points`), k-means, Gaussian
mixtures, and their compiled per-point loops. ``fit`` imports only ``core``."""
