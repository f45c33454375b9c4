"""Gaussian mixtures with full covariances: stable log-densities, EM on weighted points, sampling, and the
algebra of mixtures.

The kernels at the top are pure functions of one chunk (numpy, and the compiled loops of
:mod:`mixlib.fit.compiled`). :func:`fit_gmm` owns the EM loop: each iteration is one tree reduction of the
sufficient statistics ``N_k``, ``S_k = sum r x``, ``SS_k = sum r x x^T`` and the log-likelihood over the
points persisted on the cluster (:class:`mixlib.fit.points.WeightedPoints`), then an M-step on the client.
Weighted points make the colour histogram of an image an exact stand-in for its pixels.
"""

import dataclasses
import functools
import logging

import numpy as np

from ..core.reduce import add_stats
from .kmeans import contiguous, fit_kmeans, nearest_centres
from .points import WeightedPoints, weighted_points

log = logging.getLogger("mixlib")

# A component whose total responsibility falls below this share of the data has collapsed.
COLLAPSED_SHARE = 1e-8


@dataclasses.dataclass(frozen=True)
class Mixture:
    """A Gaussian mixture with full covariances.

    Attributes
    ----------
    weights : ndarray (k,), positive, summing to 1
    means : ndarray (k, D)
    covariances : ndarray (k, D, D), symmetric positive definite
    """

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray

    @property
    def precision_cholesky(self):
        """``(k, D, D)``: upper-triangular ``U_k`` with ``U_k U_k^T = Sigma_k^-1`` (scikit-learn's convention)."""
        return precision_cholesky(self.covariances)

    def shifted(self, offset):
        """The same mixture with every mean moved by ``offset (D,)``."""
        return Mixture(self.weights, self.means + offset, self.covariances)


# ----------------------------------------------------------------------------------------- kernels

def precision_cholesky(covariances):
    """Cholesky factors of the precisions, ``(k, D, D)``, from covariances ``(k, D, D)``.

    With ``Sigma = L L^T`` (L lower triangular), ``U = L^-T`` is upper triangular and ``U U^T = Sigma^-1``.
    Raises ``numpy.linalg.LinAlgError`` when a covariance is not positive definite.
    """
    from scipy.linalg import solve_triangular  # imported here: 0.15 s that a k-means job does not need

    dims = covariances.shape[-1]
    factors = np.empty_like(covariances)
    for j, cov in enumerate(covariances):
        lower = np.linalg.cholesky(cov)
        factors[j] = solve_triangular(lower, np.eye(dims), lower=True).T
    return factors


def log_gaussian(x, means, prec_chol):
    """``log N(x_i | mu_j, Sigma_j)``, shape ``(n, k)``, from the precision Cholesky factors ``(k, D, D)``.

    ``log N = -(D log 2 pi + ||(x - mu) U||^2) / 2 + log det U``, and ``log det U`` is the sum of the
    logs of U's diagonal, so no determinant or inverse is ever formed (see :mod:`mixlib.fit.compiled`).
    """
    return joint_log_prob_of(x, np.zeros(len(means)), means, prec_chol)


def joint_log_prob_of(x, log_weights, means, prec_chol):
    """``log(pi_j N(x_i | mu_j, Sigma_j))``, shape ``(n, k)``, for log-weights ``(k,)``, means ``(k, D)`` and
    precision Cholesky factors ``(k, D, D)``."""
    from .loops import joint_log_prob

    return joint_log_prob(contiguous(x), contiguous(log_weights), contiguous(means), contiguous(prec_chol))


def log_sum_exp(a):
    """``log sum_j exp(a_ij)`` per row of ``a (n, k)``, shifted by the row maximum so nothing overflows.
    (scipy.special.logsumexp gives the same and was 3x slower on (65536, 16) here: this is the E-step's
    hottest line.)"""
    top = a.max(axis=1)
    return np.log(np.exp(a - top[:, None]).sum(axis=1)) + top


def joint_log_prob(x, mixture):
    """``log(pi_j N(x_i | mu_j, Sigma_j))``, shape ``(n, k)``."""
    return joint_log_prob_of(x, np.log(mixture.weights), mixture.means, mixture.precision_cholesky)


def log_responsibilities(x, mixture):
    """``log p(j | x_i)``, shape ``(n, k)``: the joint log-probabilities normalised by log-sum-exp."""
    joint = joint_log_prob(x, mixture)
    return joint - log_sum_exp(joint)[:, None]


def moment_stats(x, weights, resp):
    """Sufficient statistics of responsibilities ``resp (n, k)`` for weighted points ``x (n, D)``.

    Returns
    -------
    dict with ``nk`` (k,) = sum_i w_i r_ik, ``sx`` (k, D) = sum_i w_i r_ik x_i and
    ``sxx`` (k, D, D) = sum_i w_i r_ik x_i x_i^T
    """
    weighted = resp * weights[:, None]
    dims = x.shape[1]
    outer = (x[:, :, None] * x[:, None, :]).reshape(len(x), dims * dims)  # x_i x_i^T, flattened
    return {"nk": weighted.sum(axis=0), "sx": weighted.T @ x,
            "sxx": (weighted.T @ outer).reshape(-1, dims, dims)}


def em_chunk(x, weights, log_weights, means, prec_chol):
    """E-step statistics of one chunk: ``nk`` (k,), ``sx`` (k, D) and ``sxx`` (k, D, D) as in
    :func:`moment_stats`, of the responsibilities, and ``loglik``, the weighted sum of ``log p(x_i)`` (see
    :func:`mixlib.fit.compiled.em_sums`)."""
    from .loops import em_sums

    nk, sx, sxx, loglik = em_sums(contiguous(x), contiguous(weights), contiguous(log_weights), contiguous(means),
                                  contiguous(prec_chol))
    return {"nk": nk, "sx": sx, "sxx": sxx, "loglik": loglik}


def hard_stats_chunk(x, weights, centres):
    """:func:`moment_stats` of one-hot responsibilities: each point belongs to its nearest centre."""
    labels, _ = nearest_centres(x, centres)
    return moment_stats(x, weights, np.eye(len(centres))[labels])


def random_stats_chunk(x, weights, k, seed_key):
    """:func:`moment_stats` of random responsibilities (uniform, normalised per point) from the stream
    ``seed_key`` (seed, chunk index)."""
    rng = np.random.default_rng(np.random.SeedSequence(list(seed_key)))
    resp = rng.uniform(size=(len(x), k))
    return moment_stats(x, weights, resp / resp.sum(axis=1, keepdims=True))


def m_step(stats, total_weight, reg_covar):
    """Mixture parameters from sufficient statistics (the M-step).

    ``pi_k = N_k / N``, ``mu_k = S_k / N_k``, ``Sigma_k = SS_k / N_k - mu_k mu_k^T + reg_covar I``; as in
    scikit-learn, ``N_k`` gets ``10 eps`` so that an empty component divides by a positive number.
    """
    nk = stats["nk"] + 10 * np.finfo(np.float64).eps
    means = stats["sx"] / nk[:, None]
    covariances = stats["sxx"] / nk[:, None, None] - np.einsum("kd,ke->kde", means, means)
    dims = means.shape[1]
    covariances[:, np.arange(dims), np.arange(dims)] += reg_covar
    return Mixture(nk / total_weight, means, covariances)


def mixture_moments(mixture):
    """Mean ``(D,)`` and covariance ``(D, D)`` of a mixture.

    ``E[x] = sum_k pi_k mu_k`` and ``Cov[x] = sum_k pi_k (Sigma_k + mu_k mu_k^T) - E[x] E[x]^T``.
    """
    mean = mixture.weights @ mixture.means
    second = np.einsum("k,kde->de", mixture.weights,
                       mixture.covariances + np.einsum("kd,ke->kde", mixture.means, mixture.means))
    return mean, second - np.outer(mean, mean)


def sum_of_mixtures(first, second):
    """The distribution of ``x + y`` for independent mixtures x (K components) and y (L components).

    It is the K*L-component mixture with weights ``pi_k pi_l``, means ``mu_k + mu_l`` and covariances
    ``Sigma_k + Sigma_l`` (component (k, l) at index ``k * L + l``).
    """
    weights = np.outer(first.weights, second.weights).ravel()
    means = (first.means[:, None, :] + second.means[None, :, :]).reshape(-1, first.means.shape[1])
    covariances = (first.covariances[:, None] + second.covariances[None, :]).reshape(
        -1, *first.covariances.shape[1:])
    return Mixture(weights, means, covariances)


def sample_mixture(mixture, size, rng):
    """Draw ``size`` points ``(size, D)`` from a mixture (:func:`sample_components` without the components)."""
    return sample_components(mixture, size, rng)[0]


def sample_components(mixture, size, rng):
    """Draw ``size`` points from a mixture: a component by its weight, then a Gaussian draw ``mu + L z`` with
    ``Sigma = L L^T`` and ``z`` standard normal.

    Returns
    -------
    points : ndarray (size, D) float64
    components : ndarray (size,) intp, the component each point was drawn from
    """
    components = rng.choice(len(mixture.weights), size=size, p=mixture.weights)
    lower = np.linalg.cholesky(mixture.covariances)
    noise = rng.standard_normal((size, mixture.means.shape[1]))
    return mixture.means[components] + np.einsum("nde,ne->nd", lower[components], noise), components


# ------------------------------------------------------------------------------------------ the fit

@dataclasses.dataclass(frozen=True)
class GMMResult:
    """A fitted mixture.

    Attributes
    ----------
    mixture : Mixture, in the data's coordinates
    iterations : int, EM iterations run
    converged : bool
    mean_loglik : float, weighted mean of ``log p(x)`` under the final mixture
    history : list of float, the mean log-likelihood at each iteration (before its M-step)
    reseeded : int, collapsed components re-seeded
    """

    mixture: Mixture
    iterations: int
    converged: bool
    mean_loglik: float
    history: list
    reseeded: int

    def describe(self):
        """One line for a log (the summary protocol that :class:`~mixlib.fit.kmeans.KMeansResult` shares)."""
        return (f"EM: {self.iterations} iterations, converged={self.converged}, mean log-likelihood "
                f"{self.mean_loglik:.4f} per point, {self.reseeded} component(s) re-seeded")

    def summary(self, n_points):
        """What a report keeps of the fit: a dict of JSON values, with the BIC for ``n_points`` (the total weight of
        the data)."""
        m = self.mixture
        return {"iterations": self.iterations, "converged": self.converged,
                "mixture": {"weights": m.weights.tolist(), "means": m.means.tolist(),
                            "covariances": m.covariances.tolist()},
                "mean_loglik": self.mean_loglik,
                "bic": bic(self.mean_loglik, n_points, len(m.weights), m.means.shape[1]),
                "em_iterations": self.iterations, "reseeded_components": self.reseeded}


def fit_gmm(points, weights=None, *, k, init="kmeans", max_iter=100, tol=1e-3, reg_covar=1e-6, seed=0,
            chunk_rows=1 << 18, split_every=8, init_mixture=None, progress=None, in_process=False):
    """Fit a full-covariance Gaussian mixture to weighted points by EM on the current Dask client, or in this
    process.

    Parameters
    ----------
    points : ndarray or dask.array.Array (N, D); or WeightedPoints (on the cluster, or LocalPoints) already made
        (then ``weights`` is None)
    weights : ndarray or dask.array.Array (N,), or None for unit weights
    k : int, number of components
    init : 'kmeans' (responsibilities from a seeded k-means) or 'random' (seeded random responsibilities)
    max_iter : int
    tol : float, convergence when the mean log-likelihood improves by less than this
    reg_covar : float, added to every covariance diagonal, relative to the data's mean variance (absolute
        when the data has none)
    seed : int
    init_mixture : Mixture or None, initial parameters (instead of ``init``)
    progress : callable ``(iteration, **values)`` or None, called after every EM iteration with the mean
        log-likelihood
    in_process : bool, numpy points fitted in this process (the same result, with no cluster)

    Returns
    -------
    GMMResult
    """
    data = points if isinstance(points, WeightedPoints) else weighted_points(
        points, weights, chunk_rows=chunk_rows, split_every=split_every, in_process=in_process)
    # reg_covar is relative to the data's scale; data of one colour has no scale, and takes it as is.
    reg = reg_covar * (float(np.mean(data.variance)) or 1.0)
    if init_mixture is not None:
        mixture = init_mixture.shifted(-data.mean)
    else:
        mixture = m_step(_initial_stats(data, k, init, seed), data.total_weight, reg)
    history, reseeded = [], 0
    converged = False
    for iteration in range(1, max_iter + 1):
        mixture, fixed = _valid(mixture, data, reg, seed, iteration)
        reseeded += fixed
        stats = data.reduce(functools.partial(em_chunk, log_weights=np.log(mixture.weights), means=mixture.means,
                                              prec_chol=mixture.precision_cholesky), add_stats, "em-stats").result()
        history.append(stats["loglik"] / data.total_weight)
        mixture = m_step(stats, data.total_weight, reg)
        log.debug("EM iteration %d: mean log-likelihood %.6f", iteration, history[-1])
        if progress is not None:
            progress(iteration, mean_loglik=history[-1])
        if len(history) > 1 and abs(history[-1] - history[-2]) < tol:
            converged = True
            break
    mixture, fixed = _valid(mixture, data, reg, seed, max_iter + 1)
    reseeded += fixed
    final = data.reduce(functools.partial(em_chunk, log_weights=np.log(mixture.weights), means=mixture.means,
                                          prec_chol=mixture.precision_cholesky), add_stats, "em-loglik").result()
    return GMMResult(mixture.shifted(data.mean), len(history), converged, final["loglik"] / data.total_weight,
                     history, reseeded)


def _initial_stats(data, k, init, seed):
    if init == "kmeans":
        centres = fit_kmeans(data, k=k, seed=seed).centres - data.mean
        chunk = functools.partial(hard_stats_chunk, centres=centres)
        return data.reduce(chunk, add_stats, "em-init").result()
    if init == "random":
        return _random_stats(data, k, seed)
    raise ValueError(f"unknown init {init!r}; use 'kmeans' or 'random'")


def _random_stats(data, k, seed):
    """Random-responsibility statistics, each chunk from its own stream keyed by its index."""
    chunk = functools.partial(_chunk_random_stats, k=k, seed=seed)
    return add_stats(data.each_block(chunk, f"em-init-random-{seed}"))


def _chunk_random_stats(x, weights, index, k, seed):
    return random_stats_chunk(x, weights, k, (seed, index))


def _valid(mixture, data, reg, seed, iteration):
    """Re-seed collapsed components (too little weight, or a covariance that is not positive definite).

    A collapsed component restarts at a point drawn in proportion to the weights (stream ``(seed, 2,
    iteration)``) with the covariance of the whole data and an equal share of the weight.

    Returns
    -------
    Mixture, int (components re-seeded)
    """
    dims = mixture.means.shape[1]
    bad = ~(mixture.weights > COLLAPSED_SHARE) | ~np.isfinite(mixture.means).all(axis=1)
    for j in np.flatnonzero(~bad):
        try:
            np.linalg.cholesky(mixture.covariances[j])
        except np.linalg.LinAlgError:
            bad[j] = True
    if not bad.any():
        return mixture, 0
    log.warning("EM iteration %d: re-seeded %d collapsed component(s) %s; if this recurs, lower k or "
                "raise reg_covar", iteration, bad.sum(), np.flatnonzero(bad).tolist())
    weights, means, covariances = mixture.weights.copy(), mixture.means.copy(), mixture.covariances.copy()
    means[bad] = data.sample(int(bad.sum()), (seed, 2, iteration))
    covariances[bad] = np.diag(data.variance) + reg * np.eye(dims)
    weights[bad] = 1.0 / len(weights)
    return Mixture(weights / weights.sum(), means, covariances), int(bad.sum())


def most_likely_component(x, mixture, rows=1 << 16):
    """Index ``(n,)`` of the component with the highest ``pi_j N(x | mu_j, Sigma_j)`` for each point,
    computed ``rows`` points at a time."""
    return np.concatenate([joint_log_prob(x[start:start + rows], mixture).argmax(axis=1)
                           for start in range(0, len(x), rows)] or [np.zeros(0, np.intp)])


def free_parameters(k, dims):
    """Free parameters of a full-covariance mixture: ``p = (k - 1) + k D + k D (D + 1) / 2``."""
    return (k - 1) + k * dims + k * dims * (dims + 1) // 2


def bic(mean_loglik, n_points, k, dims):
    """Bayesian information criterion of a full-covariance mixture: ``-2 log L + p log N`` (p:
    :func:`free_parameters`)."""
    return -2.0 * mean_loglik * n_points + free_parameters(k, dims) * np.log(n_points)


def aic(mean_loglik, n_points, k, dims):
    """Akaike information criterion of a full-covariance mixture: ``-2 log L + 2 p`` (p: :func:`free_parameters`)."""
    return -2.0 * mean_loglik * n_points + 2 * free_parameters(k, dims)


# -------------------------------------------------------------------------------------- model files

def save_mixture(path, mixture, details):
    """Write a mixture as JSON: ``weights``, ``means``, ``covariances`` and ``details`` (what it was fitted
    on). A JSON file, so that no model file is ever unpickled."""
    import json

    document = {"format": "mixlib-gaussian-mixture", "version": 1, "weights": mixture.weights.tolist(),
                "means": mixture.means.tolist(), "covariances": mixture.covariances.tolist(), **details}
    with open(path, "w") as f:
        json.dump(document, f, indent=2)
        f.write("\n")


def load_mixture(path):
    """Read and check a mixture written by :func:`save_mixture`; InputError says what is wrong."""
    import json

    from ..core.errors import InputError

    try:
        with open(path) as f:
            document = json.load(f)
    except FileNotFoundError:
        raise InputError(f"model {path} does not exist; write one with jobs.compress --method gmm "
                         "--save-model PATH") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"model {path} is not a readable JSON model file ({e})") from None
    if not isinstance(document, dict) or document.get("format") != "mixlib-gaussian-mixture":
        raise InputError(f"model {path} is not a mixlib Gaussian mixture (no format 'mixlib-gaussian-mixture')")
    try:
        weights, means, covariances = (np.asarray(document[key], dtype=np.float64)
                                       for key in ("weights", "means", "covariances"))
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"model {path} lacks or garbles weights, means or covariances ({e})") from None
    k = len(weights) if weights.ndim == 1 else 0
    if k == 0 or means.ndim != 2 or means.shape[0] != k or means.shape[1] not in (3, 4) \
            or covariances.shape != (k, means.shape[1], means.shape[1]):
        raise InputError(f"model {path} has inconsistent shapes: weights {weights.shape}, means {means.shape}, "
                         f"covariances {covariances.shape}; expected (k,), (k, 3|4), (k, D, D)")
    if not (np.isfinite(weights).all() and np.isfinite(means).all() and np.isfinite(covariances).all()) \
            or (weights <= 0).any() or abs(weights.sum() - 1) > 1e-6:
        raise InputError(f"model {path} has non-finite values or weights that are not positive and summing to 1")
    try:
        precision_cholesky(covariances)
    except np.linalg.LinAlgError:
        raise InputError(f"model {path} has a covariance that is not positive definite") from None
    if not np.allclose(covariances, np.transpose(covariances, (0, 2, 1))):
        raise InputError(f"model {path} has a covariance that is not symmetric")
    return Mixture(weights / weights.sum(), means, covariances)  # exact normalisation for sampling
