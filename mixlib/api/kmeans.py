"""``mixlib.KMeans``: k-means (Lloyd or mini-batch) as a scikit-learn estimator, on numpy or Dask arrays."""

import functools
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

from ..fit.kmeans import fit_kmeans, nearest_centres
from .inputs import checked_points, fit_points, is_dask, rows_of, seeds


class KMeans(ClassNamePrefixFeaturesOutMixin, TransformerMixin, ClusterMixin, BaseEstimator):
    """K-means clustering by Lloyd's algorithm or mini-batches, on numpy arrays (in this process) or Dask arrays
    (on the current ``distributed`` client, or an embedded local cluster).

    The fit is :func:`mixlib.fit.kmeans.fit_kmeans`, the one the jobs run: greedy k-means++ seeding, Lloyd
    iterations with triangle-inequality bounds (numpy) or one tree reduction per iteration (Dask), empty clusters
    re-seeded with the farthest points, weighted points throughout.

    Parameters
    ----------
    n_clusters : int, default 8
    algorithm : {'lloyd', 'minibatch'}, default 'lloyd'
    init : 'k-means++' or array-like (n_clusters, n_features), default 'k-means++'
    n_init : int or 'auto', default 'auto'
        Fits from different seeds; the one of lowest inertia is kept. 'auto' is 1 (as scikit-learn's KMeans with
        k-means++), and 1 with an explicit ``init``.
    max_iter : int, default 300
        Lloyd iterations, or mini-batch steps, at most.
    tol : float, default 1e-4
        Convergence when the summed squared centre shift of an iteration is at most ``tol`` times the mean
        per-feature variance of the data (scikit-learn's convention).
    batch_size : int, default 4096
        Points per mini-batch step.
    max_no_improvement : int, default 10
        Mini-batch: stop after this many steps without a lower smoothed batch inertia.
    random_state : int, numpy RandomState or None, default None
        An int ``s`` seeds k-means++ as the jobs' ``--seed s`` does (further inits use ``s + 1``, ...); the
        palette of ``jobs.compress --seed s``, fitted from a coarse start, is :func:`mixlib.quantise`'s.
    merge_duplicates : {'auto', True, False}, default 'auto'
        Fit the distinct rows, each weighted by its copies (the same model, as a colour histogram stands for an
        image's pixels; data with many repeated rows, such as colours, fits several times faster). 'auto': when
        the first 262,144 rows hold at most half as many distinct rows as rows.

    Attributes
    ----------
    cluster_centers_ : ndarray (n_clusters, n_features) float64
    labels_ : ndarray (n_samples,) intp, or a lazy dask.array.Array for a Dask input
    inertia_ : float, weighted sum of squared distances to the nearest centre
    n_iter_ : int, iterations (or mini-batch steps) of the kept fit
    converged_ : bool
    n_features_in_ : int
    feature_names_in_ : ndarray of str, for inputs with column names

    Examples
    --------
    >>> import numpy as np
    >>> from mixlib import KMeans
    >>> X = np.array([[0.0, 0.0], [0.0, 1.0], [10.0, 10.0], [10.0, 11.0]])
    >>> model = KMeans(2, random_state=0).fit(X)
    >>> sorted(model.cluster_centers_.tolist())
    [[0.0, 0.5], [10.0, 10.5]]
    """

    def __init__(self, n_clusters=8, *, algorithm="lloyd", init="k-means++", n_init="auto", max_iter=300, tol=1e-4,
                 batch_size=4096, max_no_improvement=10, random_state=None, merge_duplicates="auto"):
        self.n_clusters = n_clusters
        self.algorithm = algorithm
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.batch_size = batch_size
        self.max_no_improvement = max_no_improvement
        self.random_state = random_state
        self.merge_duplicates = merge_duplicates

    def fit(self, X, y=None, sample_weight=None):
        """Fit the centres to ``X (n_samples, n_features)``, each row weighted by ``sample_weight (n_samples,)``
        (default 1). Returns self."""
        self._check_parameters()
        X, sample_weight = checked_points(self, X, sample_weight)
        if X.shape[0] < self.n_clusters:
            raise ValueError(f"n_samples={X.shape[0]} should be >= n_clusters={self.n_clusters}.")
        init = self.init if isinstance(self.init, str) else np.asarray(self.init, dtype=np.float64)
        runs = 1 if self.n_init == "auto" or not isinstance(self.init, str) else self.n_init
        options = dict(k=self.n_clusters, method=self.algorithm, init=init, max_iter=self.max_iter, tol=self.tol,
                       batch_size=self.batch_size, max_no_improvement=self.max_no_improvement)
        with fit_points(X, sample_weight, self.merge_duplicates) as (data, merged):
            fits = [fit_kmeans(data, seed=seed, **options) for seed in seeds(self.random_state, runs)]
        best = min(fits, key=lambda fit: fit.inertia)
        distinct = len(np.unique(best.centres, axis=0))
        if distinct < self.n_clusters:
            warnings.warn(f"Number of distinct clusters ({distinct}) found smaller than n_clusters "
                          f"({self.n_clusters}): the data has fewer distinct points", ConvergenceWarning)
        self.cluster_centers_ = best.centres
        self.inertia_ = float(best.inertia)
        self.n_iter_ = best.iterations
        self.converged_ = best.converged
        self.labels_ = self._labels(X) if merged or is_dask(X) else np.asarray(best.labels, dtype=np.intp)
        return self

    def predict(self, X):
        """Index ``(n_samples,)`` of the nearest centre of each row of ``X`` (the first one on a tie); a lazy Dask
        array for a Dask input."""
        check_is_fitted(self)
        X, _ = checked_points(self, X, reset=False)
        return self._labels(X)

    def transform(self, X):
        """Euclidean distances ``(n_samples, n_clusters)`` of the rows of ``X`` to the centres."""
        check_is_fitted(self)
        X, _ = checked_points(self, X, reset=False)
        return rows_of(X, functools.partial(_distances, centres=self.cluster_centers_), np.float64,
                       columns=self.n_clusters)

    def score(self, X, y=None, sample_weight=None):
        """Opposite of the weighted inertia of ``X`` under the fitted centres (a float; higher is better)."""
        check_is_fitted(self)
        X, sample_weight = checked_points(self, X, sample_weight, reset=False)
        squared = rows_of(X, functools.partial(_squared_distance, centres=self.cluster_centers_), np.float64)
        inertia = squared.sum() if sample_weight is None else squared @ sample_weight
        return -float(inertia.compute() if is_dask(X) else inertia)

    def _labels(self, X):
        return rows_of(X, functools.partial(_nearest, centres=self.cluster_centers_), np.intp)

    def _check_parameters(self):
        if not isinstance(self.n_clusters, (int, np.integer)) or self.n_clusters < 1:
            raise ValueError(f"n_clusters must be a positive int, got {self.n_clusters!r}")
        if self.algorithm not in ("lloyd", "minibatch"):
            raise ValueError(f"algorithm must be 'lloyd' or 'minibatch', got {self.algorithm!r}")
        if not (self.n_init == "auto" or (isinstance(self.n_init, (int, np.integer)) and self.n_init >= 1)):
            raise ValueError(f"n_init must be 'auto' or a positive int, got {self.n_init!r}")
        if isinstance(self.init, str) and self.init != "k-means++":
            raise ValueError(f"init must be 'k-means++' or an array of centres, got {self.init!r}")

    @property
    def _n_features_out(self):
        """Columns of :meth:`transform` (for ``get_feature_names_out``)."""
        return self.cluster_centers_.shape[0]


def _nearest(block, centres):
    """Nearest centre ``(n,)`` of each row of ``block (n, D)``."""
    return nearest_centres(block, centres)[0]


def _squared_distance(block, centres):
    """Squared distance ``(n,)`` of each row of ``block (n, D)`` to its nearest centre."""
    return nearest_centres(block, centres)[1]


def _distances(block, centres):
    """Euclidean distances ``(n, k)`` of the rows of ``block (n, D)`` to ``centres (k, D)``."""
    from scipy.spatial.distance import cdist

    return cdist(block, centres)
