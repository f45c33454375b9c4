"""mixlib: k-means, Gaussian mixtures and ALS as batch jobs on Dask distributed."""

__version__ = "0.1.0"
