"""``mixlib.GaussianMixture``: a full-covariance Gaussian mixture fitted by EM, as a scikit-learn estimator on numpy
or Dask arrays, with the algebra of mixtures (moments, sums of independent mixtures)."""

import functools
import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

from ..fit.gmm import (Mixture, aic, bic, fit_gmm, joint_log_prob_of, log_sum_exp, mixture_moments,
                       precision_cholesky, sample_components, sum_of_mixtures)
from .inputs import checked_points, fit_points, is_dask, rows_of, seeds


class GaussianMixture(DensityMixin, BaseEstimator):
    """A Gaussian mixture with full covariances fitted by EM, on numpy arrays (in this process) or Dask arrays (on
    the current ``distributed`` client, or an embedded local cluster).

    The fit is :func:`mixlib.fit.gmm.fit_gmm`, the one ``jobs.compress --method gmm`` runs: responsibilities from a
    seeded k-means (or random ones), one tree reduction of the sufficient statistics per EM iteration, collapsed
    components re-seeded, weighted points throughout.

    Parameters
    ----------
    n_components : int, default 1
    covariance_type : {'full'}, default 'full'
        Only full covariances (the parameter is there so that scikit-learn code that names it runs unchanged).
    tol : float, default 1e-3
        Convergence when the mean log-likelihood per sample improves by less than this.
    reg_covar : float, default 1e-6
        Added to the diagonal of every covariance, in the data's units (as scikit-learn).
    max_iter : int, default 100
    n_init : int, default 1
        Fits from different seeds; the one of highest final log-likelihood is kept.
    init_params : {'kmeans', 'random'}, default 'kmeans'
    random_state : int, numpy RandomState or None, default None
        Seeds the fit and :meth:`sample`; an int ``s`` seeds the streams ``jobs.compress --method gmm --seed s``
        seeds (whose ``reg_covar`` is relative to the colour variance, this one's absolute).
    merge_duplicates : {'auto', True, False}, default 'auto'
        Fit the distinct rows, each weighted by its copies (see :class:`mixlib.KMeans`).

    Attributes
    ----------
    weights_ : ndarray (n_components,)
    means_ : ndarray (n_components, n_features)
    covariances_ : ndarray (n_components, n_features, n_features)
    precisions_cholesky_ : ndarray (n_components, n_features, n_features), upper-triangular ``U`` with
        ``U U^T`` the precision (scikit-learn's convention)
    precisions_ : ndarray (n_components, n_features, n_features)
    converged_ : bool
    n_iter_ : int
    lower_bound_ : float, the mean log-likelihood per sample at the last EM iteration (before its M-step)
    lower_bounds_ : list of float, the same at every iteration
    n_features_in_ : int
    feature_names_in_ : ndarray of str, for inputs with column names

    Examples
    --------
    >>> import numpy as np
    >>> from mixlib import GaussianMixture
    >>> X = np.random.default_rng(0).normal(size=(1000, 2)) + [[0, 0]] * 500 + [[8, 8]] * 500
    >>> model = GaussianMixture(2, random_state=0).fit(X)
    >>> np.round(sorted(model.means_[:, 0]))
    array([0., 8.])
    """

    def __init__(self, n_components=1, *, covariance_type="full", tol=1e-3, reg_covar=1e-6, max_iter=100, n_init=1,
                 init_params="kmeans", random_state=None, merge_duplicates="auto"):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.random_state = random_state
        self.merge_duplicates = merge_duplicates

    def fit(self, X, y=None, sample_weight=None):
        """Fit the mixture to ``X (n_samples, n_features)``, each row weighted by ``sample_weight (n_samples,)``
        (default 1). Returns self."""
        self._check_parameters()
        X, sample_weight = checked_points(self, X, sample_weight)
        if X.shape[0] < self.n_components:
            raise ValueError(f"Expected n_samples >= n_components but got n_components = {self.n_components}, "
                             f"n_samples = {X.shape[0]}")
        with fit_points(X, sample_weight, self.merge_duplicates) as (data, _):
            fits = self._fits(data)
        best = max(fits, key=lambda fit: fit.mean_loglik)
        if not best.converged:
            warnings.warn(f"EM did not converge in {self.max_iter} iterations; raise max_iter or tol, or check "
                          "the data", ConvergenceWarning)
        self._set_mixture(best.mixture)
        self.converged_ = best.converged
        self.n_iter_ = best.iterations
        self.lower_bounds_ = list(best.history)
        self.lower_bound_ = float(best.history[-1])
        return self

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit, then the most likely component of each row of ``X`` (:meth:`predict`)."""
        return self.fit(X, sample_weight=sample_weight).predict(X)

    def weighted_log_prob(self, X):
        """``log(pi_j N(x_i | mu_j, Sigma_j))`` for every row and component, ``(n_samples, n_components)``: the
        per-component log-probabilities (a lazy Dask array for a Dask input)."""
        check_is_fitted(self)
        X, _ = checked_points(self, X, reset=False)
        return rows_of(X, self._joint_kernel(), np.float64, columns=self.n_components_)

    def score_samples(self, X):
        """The mixture's log-density ``log p(x_i)`` of every row of ``X``, ``(n_samples,)``."""
        check_is_fitted(self)
        X, _ = checked_points(self, X, reset=False)
        return rows_of(X, functools.partial(_log_density, joint=self._joint_kernel()), np.float64)

    def score(self, X, y=None, sample_weight=None):
        """Mean log-density of the rows of ``X`` (weighted by ``sample_weight`` when given), a float."""
        densities = self.score_samples(X)
        if sample_weight is not None:
            weights = np.asarray(sample_weight, dtype=np.float64) if not is_dask(sample_weight) else sample_weight
            mean = (densities * weights).sum() / weights.sum()
        else:
            mean = densities.mean()
        return float(mean.compute() if is_dask(mean) else mean)

    def predict_proba(self, X):
        """Responsibilities ``p(j | x_i)``, ``(n_samples, n_components)``, rows summing to 1."""
        check_is_fitted(self)
        X, _ = checked_points(self, X, reset=False)
        return rows_of(X, functools.partial(_responsibilities, joint=self._joint_kernel()), np.float64,
                       columns=self.n_components_)

    def predict(self, X):
        """The most likely component ``(n_samples,)`` of each row of ``X``."""
        check_is_fitted(self)
        X, _ = checked_points(self, X, reset=False)
        return rows_of(X, functools.partial(_most_likely, joint=self._joint_kernel()), np.intp)

    def sample(self, n_samples=1):
        """Draw ``n_samples`` points from the mixture.

        Returns
        -------
        X : ndarray (n_samples, n_features)
        y : ndarray (n_samples,), the component each point was drawn from
        """
        check_is_fitted(self)
        if not isinstance(n_samples, numbers.Integral) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
        return sample_components(self.mixture_, n_samples, np.random.default_rng(seeds(self.random_state, 1)[0]))

    def bic(self, X):
        """Bayesian information criterion on ``X``: ``-2 log L + p log n`` (lower is better)."""
        return bic(self.score(X), X.shape[0], self.n_components_, self.n_features_in_)

    def aic(self, X):
        """Akaike information criterion on ``X``: ``-2 log L + 2 p`` (lower is better)."""
        return aic(self.score(X), X.shape[0], self.n_components_, self.n_features_in_)

    def moments(self):
        """Mean ``(n_features,)`` and covariance ``(n_features, n_features)`` of the mixture, in closed form."""
        check_is_fitted(self)
        return mixture_moments(self.mixture_)

    def independent_sum(self, other):
        """The distribution of ``x + y`` for independent ``x`` from this mixture (K components) and ``y`` from
        ``other`` (L components): a fitted GaussianMixture of K * L components (component ``(k, l)`` at index
        ``k * L + l``) with this one's parameters."""
        check_is_fitted(self)
        check_is_fitted(other)
        if other.n_features_in_ != self.n_features_in_:
            raise ValueError(f"the mixtures have {self.n_features_in_} and {other.n_features_in_} features")
        total = sum_of_mixtures(self.mixture_, other.mixture_)
        result = GaussianMixture(len(total.weights), **{key: value for key, value in self.get_params().items()
                                                          if key != "n_components"})
        result.n_features_in_ = self.n_features_in_
        result._set_mixture(total)
        result.converged_, result.n_iter_, result.lower_bound_, result.lower_bounds_ = True, 0, np.nan, []
        return result

    @property
    def mixture_(self):
        """The fitted parameters as a :class:`mixlib.fit.gmm.Mixture` (what the jobs save and sample)."""
        return Mixture(self.weights_, self.means_, self.covariances_)

    @property
    def n_components_(self):
        """Components of the fitted mixture (``n_components``, or K * L for :meth:`independent_sum`)."""
        return len(self.weights_)

    def _fits(self, data):
        """One :func:`fit_gmm` per seed of ``n_init``; ``reg_covar`` made relative to the data's mean variance, as
        fit_gmm takes it."""
        scale = float(np.mean(data.variance)) or 1.0
        return [fit_gmm(data, k=self.n_components, init=self.init_params, max_iter=self.max_iter, tol=self.tol,
                        reg_covar=self.reg_covar / scale, seed=seed)
                for seed in seeds(self.random_state, self.n_init)]

    def _set_mixture(self, mixture):
        self.weights_ = mixture.weights
        self.means_ = mixture.means
        self.covariances_ = mixture.covariances
        self.precisions_cholesky_ = precision_cholesky(mixture.covariances)
        self.precisions_ = self.precisions_cholesky_ @ np.transpose(self.precisions_cholesky_, (0, 2, 1))

    def _joint_kernel(self):
        return functools.partial(joint_log_prob_of, log_weights=np.log(self.weights_), means=self.means_,
                                 prec_chol=self.precisions_cholesky_)

    def _check_parameters(self):
        if not isinstance(self.n_components, (int, np.integer)) or self.n_components < 1:
            raise ValueError(f"n_components must be a positive int, got {self.n_components!r}")
        if self.covariance_type != "full":
            raise ValueError(f"covariance_type {self.covariance_type!r} is not supported: mixlib fits full "
                             "covariances only ('full')")
        if self.init_params not in ("kmeans", "random"):
            raise ValueError(f"init_params must be 'kmeans' or 'random', got {self.init_params!r}")
        if not isinstance(self.n_init, (int, np.integer)) or self.n_init < 1:
            raise ValueError(f"n_init must be a positive int, got {self.n_init!r}")


def _log_density(block, joint):
    """``log p(x)`` ``(n,)`` of the rows of ``block`` from the joint log-probabilities ``joint(block) (n, k)``."""
    return log_sum_exp(joint(block)) if len(block) else np.zeros(0)


def _responsibilities(block, joint):
    values = joint(block)
    if not len(block):
        return values
    return np.exp(values - log_sum_exp(values)[:, None])


def _most_likely(block, joint):
    return joint(block).argmax(axis=1) if len(block) else np.zeros(0, np.intp)
