"""What the estimators share: their inputs checked the scikit-learn way (numpy) or by shape and dtype (Dask arrays,
whose values are only seen by the fit), the weighted points a fit runs on (repeated rows merged) and the client a
Dask fit runs on, seeds from ``random_state``, and per-row outputs (numpy, or lazy Dask arrays)."""

import contextlib
import logging
import numbers
import sys

import numpy as np

from ..fit.points import distinct_points, distinct_share, weighted_points

log = logging.getLogger("mixlib")


def is_dask(array):
    """True for a ``dask.array.Array`` (without importing Dask for other inputs)."""
    module = sys.modules.get("dask.array")
    return module is not None and isinstance(array, module.Array)


def checked_points(estimator, X, sample_weight=None, *, reset=True):
    """``(X (N, D) float64, weights (N,) float64 or None)`` for a fit or a prediction.

    Numpy-like inputs go through scikit-learn's ``validate_data`` (finite values, 2-D, ``n_features_in_`` and
    ``feature_names_in_`` set when ``reset``, else checked). A Dask array keeps its chunks: its shape, dtype and
    number of features are checked here, and the fit refuses non-finite values when their moments are computed.

    Parameters
    ----------
    estimator : a scikit-learn estimator
    X : array-like or dask.array.Array (N, D)
    sample_weight : array-like or dask.array.Array (N,), or None
    reset : bool, a fit (True) or a prediction on a fitted estimator (False)
    """
    if not is_dask(X):
        from sklearn.utils.validation import _check_sample_weight, validate_data

        X = validate_data(estimator, X, dtype=np.float64, reset=reset)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
        return X, sample_weight
    if X.ndim != 2:
        raise ValueError(f"Expected a 2-D Dask array, got {X.ndim} dimension(s); reshape it to (n_samples, "
                         "n_features)")
    if X.dtype.kind not in "biuf":
        raise ValueError(f"Expected a Dask array of numbers, got dtype {X.dtype}")
    if any(np.isnan(size) for size in X.shape):
        raise ValueError("the Dask array's chunk sizes are unknown; call X.compute_chunk_sizes() first")
    if reset:
        estimator.n_features_in_ = X.shape[1]
        if hasattr(estimator, "feature_names_in_"):
            del estimator.feature_names_in_
    elif X.shape[1] != estimator.n_features_in_:
        raise ValueError(f"X has {X.shape[1]} features, but {type(estimator).__name__} is expecting "
                         f"{estimator.n_features_in_} features as input")
    X = X.astype(np.float64).rechunk({1: -1})
    if sample_weight is not None:
        import dask.array as da

        sample_weight = da.asarray(sample_weight)
        if sample_weight.shape != (X.shape[0],):
            raise ValueError(f"sample_weight has shape {sample_weight.shape}; expected ({X.shape[0]},)")
        sample_weight = sample_weight.astype(np.float64).rechunk((X.chunks[0],))
    return X, sample_weight


# Distinct rows up to this many are fitted in this process, as jobs.compress fits a colour histogram: the cluster
# would only add a round trip per iteration.
IN_PROCESS_POINTS = 1 << 18
# merge_duplicates="auto" fits the distinct rows when the first rows hold at most this share of distinct rows.
REPEATED_SHARE = 0.5
FIRST_BLOCK_ROWS = 1 << 18


@contextlib.contextmanager
def fit_points(X, sample_weight, merge_duplicates):
    """Yield the weighted points a fit runs on (:mod:`mixlib.fit.points`), and whether they are ``X``'s distinct rows.

    With ``merge_duplicates`` (True, or "auto" and :func:`repeats_rows`), the distinct rows of ``X`` weighted by
    their copies' summed weights (:func:`mixlib.fit.points.distinct_points`): the same model, as an image's colour
    histogram stands for its pixels, with fewer points to visit. A numpy ``X`` is fitted in this process; a Dask
    array on the current client (or an embedded one, kept for the duration), its distinct rows in this process when
    there are at most ``IN_PROCESS_POINTS``.
    """
    if merge_duplicates not in ("auto", True, False):
        raise ValueError(f"merge_duplicates must be 'auto', True or False, got {merge_duplicates!r}")
    merge = merge_duplicates is True or (merge_duplicates == "auto" and repeats_rows(X))
    if not is_dask(X):
        rows, weights = distinct_points(X, sample_weight) if merge else (X, sample_weight)
        yield weighted_points(rows, weights, in_process=True), merge
        return
    with dask_client():
        if not merge:
            data = weighted_points(X, sample_weight)
            check_finite_moments(data.mean)
            yield data, False
            return
        rows, weights = distinct_points(X, sample_weight)
        check_finite_moments(rows)
        yield weighted_points(rows, weights, in_process=len(rows) <= IN_PROCESS_POINTS), True


def repeats_rows(X):
    """Whether the first ``FIRST_BLOCK_ROWS`` rows of ``X`` (whatever its chunks) have at most ``REPEATED_SHARE``
    distinct rows."""
    first = X[:FIRST_BLOCK_ROWS]
    return distinct_share(np.asarray(first.compute() if is_dask(X) else first, dtype=np.float64)) <= REPEATED_SHARE


def check_finite_moments(mean):
    """ValueError when the weighted mean of the points (computed by the fit), or any value given, is not finite: a
    Dask input held NaN or infinity, which no check before the fit has read."""
    if not np.all(np.isfinite(mean)):
        raise ValueError("Input X contains NaN or infinity (or its weighted mean overflows)")


def seeds(random_state, count):
    """``count`` integer seeds for the fits of ``n_init``: ``random_state, random_state + 1, ...`` for an int (so
    ``random_state=s`` seeds the streams a job's ``--seed s`` seeds), else drawn from
    ``check_random_state(random_state)``."""
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return [int(random_state) + i for i in range(count)]
    from sklearn.utils import check_random_state

    return [int(s) for s in check_random_state(random_state).randint(np.iinfo(np.int32).max, size=count)]


@contextlib.contextmanager
def dask_client():
    """Yield the current ``distributed`` client, or the client of an embedded local cluster (threaded workers on
    127.0.0.1, the jobs' defaults) that is closed on exit."""
    from distributed import default_client

    try:
        client = default_client()
    except ValueError:
        client = None
    if client is not None:
        yield client
        return
    from ..core.cluster import ClusterOptions, connect

    log.info("no Dask client: fitting on an embedded local cluster")
    with connect(ClusterOptions(dashboard_address="127.0.0.1:0")) as client:
        yield client


def rows_of(X, kernel, dtype, columns=None):
    """``kernel(block) -> (n,)`` or ``(n, columns)`` applied to the row blocks of ``X``: numpy in, numpy out; a
    Dask array in, a lazy Dask array out (computed by whatever scheduler the caller uses)."""
    if not is_dask(X):
        return kernel(X)
    if columns is None:
        return X.map_blocks(kernel, drop_axis=1, dtype=dtype)
    return X.map_blocks(kernel, chunks=(X.chunks[0], (columns,)), dtype=dtype)
