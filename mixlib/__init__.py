"""mixlib: k-means, Gaussian mixtures and ALS as batch jobs on Dask distributed, and as a Python API.

The public names are imported on first use (PEP 562), so that a job, which imports ``mixlib.core`` and friends,
does not pay for scikit-learn's import (half a second) that the estimators' base classes bring.
"""

import importlib as _importlib

__version__ = "0.1.0"

_PUBLIC = {
    "KMeans": "mixlib.api.kmeans",
    "GaussianMixture": "mixlib.api.mixture",
    "quantise": "mixlib.image.quantise",
    "Quantised": "mixlib.image.quantise",
    "ExplicitALS": "mixlib.api.recommend",
    "ImplicitALS": "mixlib.api.recommend",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name):
    if name in _PUBLIC:
        value = getattr(_importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mixlib' has no attribute {name!r}")


def __dir__():
    return sorted(name for name in set(globals()) | set(_PUBLIC) if not name.startswith("_") or name == "__version__")
