"""Gaussian mixtures: kernels against scipy and brute force, EM against scikit-learn, the algebra of
mixtures against Monte Carlo."""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from mixlib.fit import gmm
from mixlib.image.colors import decode_colours, histogram_chunk


def random_mixture(rng, k, dims=3, scale=20.0):
    means = rng.normal(0, scale, size=(k, dims))
    factors = rng.normal(size=(k, dims, dims))
    covariances = factors @ np.transpose(factors, (0, 2, 1)) + 0.5 * np.eye(dims)
    weights = rng.uniform(0.2, 1.0, size=k)
    return gmm.Mixture(weights / weights.sum(), means, covariances)


def sklearn_model(mixture):
    """A scikit-learn GaussianMixture holding the given parameters (for its public scoring methods)."""
    from sklearn.mixture import GaussianMixture

    model = GaussianMixture(len(mixture.weights), covariance_type="full")
    model.weights_, model.means_, model.covariances_ = mixture.weights, mixture.means, mixture.covariances
    model.precisions_cholesky_ = gmm.precision_cholesky(mixture.covariances)
    model.precisions_ = np.linalg.inv(mixture.covariances)
    return model


@pytest.fixture(scope="module")
def china_histogram(china):
    hist = histogram_chunk(china)
    return decode_colours(hist["codes"], 3).astype(np.float64), hist["counts"].astype(np.float64)


# ----------------------------------------------------------------------------------------- kernels

def test_log_gaussian_matches_scipy():
    rng = np.random.default_rng(0)
    mixture = random_mixture(rng, 4)
    x = rng.normal(0, 30, size=(500, 3))
    got = gmm.log_gaussian(x, mixture.means, mixture.precision_cholesky)
    for j in range(4):
        expected = scipy_stats.multivariate_normal(mixture.means[j], mixture.covariances[j]).logpdf(x)
        np.testing.assert_allclose(got[:, j], expected, rtol=1e-10)


def test_joint_and_responsibilities_match_sklearn():
    rng = np.random.default_rng(1)
    mixture = random_mixture(rng, 5)
    x = rng.normal(0, 30, size=(400, 3))
    model = sklearn_model(mixture)
    joint = gmm.joint_log_prob(x, mixture)
    np.testing.assert_allclose(np.logaddexp.reduce(joint, axis=1), model.score_samples(x), rtol=1e-10)
    log_resp = gmm.log_responsibilities(x, mixture)
    np.testing.assert_allclose(np.exp(log_resp), model.predict_proba(x), atol=1e-12)
    np.testing.assert_allclose(np.logaddexp.reduce(log_resp, axis=1), 0.0, atol=1e-12)


def test_log_densities_are_stable_far_from_every_component():
    # At x = (1000, 1000, 1000) both densities underflow to 0 in linear space (log N ~ -1e10); in log space
    # the wider component must take all the responsibility, and two equal components half each.
    x = np.full((1, 3), 1e3)
    narrow_and_wide = gmm.Mixture(np.array([0.5, 0.5]), np.zeros((2, 3)), np.stack([np.eye(3) * 1e-4, np.eye(3)]))
    log_resp = gmm.log_responsibilities(x, narrow_and_wide)
    assert np.isfinite(log_resp).all()
    np.testing.assert_allclose(np.exp(log_resp), [[0.0, 1.0]], atol=1e-12)
    equal = gmm.Mixture(np.array([0.5, 0.5]), np.zeros((2, 3)), np.stack([np.eye(3) * 1e-4] * 2))
    # log p ~ -1.5e10 carries about 2e-6 of absolute rounding; the responsibilities stay 1/2 to that.
    np.testing.assert_allclose(np.exp(gmm.log_responsibilities(x, equal)), 0.5, rtol=1e-5)


def test_em_chunk_matches_brute_force_loops():
    rng = np.random.default_rng(2)
    mixture = random_mixture(rng, 3, scale=3.0)
    x = mixture.means[rng.integers(0, 3, size=60)] + rng.normal(0, 2.0, size=(60, 3))  # densities far from 0
    w = rng.uniform(0.1, 5.0, size=60)
    got = gmm.em_chunk(x, w, np.log(mixture.weights), mixture.means, mixture.precision_cholesky)
    nk, sx, sxx, loglik = np.zeros(3), np.zeros((3, 3)), np.zeros((3, 3, 3)), 0.0
    for i in range(60):
        dens = [mixture.weights[j] * scipy_stats.multivariate_normal(mixture.means[j], mixture.covariances[j]).pdf(x[i])
                for j in range(3)]
        loglik += w[i] * np.log(sum(dens))
        for j in range(3):
            r = w[i] * dens[j] / sum(dens)
            nk[j] += r
            sx[j] += r * x[i]
            sxx[j] += r * np.outer(x[i], x[i])
    np.testing.assert_allclose(got["nk"], nk, rtol=1e-9)
    np.testing.assert_allclose(got["sx"], sx, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got["sxx"], sxx, rtol=1e-9, atol=1e-7)
    np.testing.assert_allclose(got["loglik"], loglik, rtol=1e-10)


# ------------------------------------------------------------------------------------------- EM fit

def initial_mixture(pixels, k, seed=0):
    """Initial parameters from a k-means++ draw on the pixels (independent of mixlib's k-means)."""
    from sklearn.cluster import kmeans_plusplus

    centres, _ = kmeans_plusplus(pixels, k, random_state=seed)
    cov = np.cov(pixels.T)
    return gmm.Mixture(np.full(k, 1.0 / k), centres, np.stack([cov] * k))


@pytest.mark.parametrize("iterations", [1, 2, 3, 4, 5])
def test_em_iterations_equal_sklearn(client, china, china_histogram, iterations):
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    pixels = china.reshape(-1, 3).astype(np.float64)
    start = initial_mixture(pixels, 5)
    reg_relative = 1e-6
    reg_absolute = reg_relative * np.mean(np.var(pixels, axis=0))
    colours, counts = china_histogram
    ours = gmm.fit_gmm(colours, counts, k=5, init_mixture=start, max_iter=iterations, tol=0.0,
                       reg_covar=reg_relative)
    model = GaussianMixture(5, covariance_type="full", max_iter=iterations, tol=0.0, reg_covar=reg_absolute,
                            weights_init=start.weights, means_init=start.means,
                            precisions_init=np.linalg.inv(start.covariances))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(pixels)
    assert ours.iterations == model.n_iter_ == iterations
    np.testing.assert_allclose(ours.mixture.weights, model.weights_, rtol=1e-6)
    np.testing.assert_allclose(ours.mixture.means, model.means_, rtol=1e-6)
    np.testing.assert_allclose(ours.mixture.covariances, model.covariances_, rtol=1e-6, atol=1e-6)
    # The log-likelihood before the last M-step is scikit-learn's lower bound.
    np.testing.assert_allclose(ours.history[-1], model.lower_bound_, rtol=1e-9)


def test_final_loglik_is_as_good_as_sklearn(client, china, china_histogram):
    from sklearn.mixture import GaussianMixture

    pixels = china.reshape(-1, 3).astype(np.float64)
    colours, counts = china_histogram
    ours = gmm.fit_gmm(colours, counts, k=5, seed=0)
    reg_absolute = 1e-6 * np.mean(np.var(pixels, axis=0))
    model = GaussianMixture(5, covariance_type="full", reg_covar=reg_absolute, random_state=0).fit(pixels)
    assert ours.converged
    assert ours.mean_loglik >= model.score(pixels) - 0.01
    # The reported log-likelihood is the mean of log p(x) over every pixel, computed independently here.
    np.testing.assert_allclose(ours.mean_loglik, sklearn_model(ours.mixture).score(pixels), rtol=1e-9)


def test_histogram_path_equals_every_pixel_path(client, china, china_histogram):
    import dask.array as da

    pixels = china.reshape(-1, 3).astype(np.float64)
    start = initial_mixture(pixels, 4, seed=3)
    colours, counts = china_histogram
    by_colour = gmm.fit_gmm(colours, counts, k=4, init_mixture=start, max_iter=8, tol=0.0)
    by_pixel = gmm.fit_gmm(da.from_array(pixels, chunks=(40_000, 3)), None, k=4, init_mixture=start,
                           max_iter=8, tol=0.0)
    for name in ("weights", "means", "covariances"):
        np.testing.assert_allclose(getattr(by_colour.mixture, name), getattr(by_pixel.mixture, name), rtol=1e-8)
    np.testing.assert_allclose(by_colour.history, by_pixel.history, rtol=1e-10)


@pytest.mark.parametrize("init", ["kmeans", "random"])
def test_fit_is_deterministic_for_a_seed(client, china_histogram, init):
    colours, counts = china_histogram
    first = gmm.fit_gmm(colours, counts, k=3, init=init, seed=5, max_iter=5)
    second = gmm.fit_gmm(colours, counts, k=3, init=init, seed=5, max_iter=5)
    np.testing.assert_array_equal(first.mixture.means, second.mixture.means)
    other = gmm.fit_gmm(colours, counts, k=3, init=init, seed=6, max_iter=5)
    assert not np.array_equal(first.mixture.means, other.mixture.means)


def test_more_components_than_colours_never_gives_nan(client):
    colours = np.array([[10.0, 20.0, 30.0], [200.0, 10.0, 10.0], [5.0, 250.0, 90.0]])
    counts = np.array([500.0, 300.0, 200.0])
    result = gmm.fit_gmm(colours, counts, k=5, seed=0, max_iter=30)
    mixture = result.mixture
    for value in (mixture.weights, mixture.means, mixture.covariances, result.history, result.mean_loglik):
        assert np.isfinite(value).all()
    np.testing.assert_allclose(mixture.weights.sum(), 1.0)
    np.linalg.cholesky(mixture.covariances)  # every covariance positive definite
    # Every colour is still explained: the most likely component of each has its mean at the colour.
    best = gmm.joint_log_prob(colours, mixture).argmax(axis=1)
    np.testing.assert_allclose(mixture.means[best], colours, atol=1e-3)


def test_one_colour_data(client):
    result = gmm.fit_gmm(np.array([[7.0, 8.0, 9.0]]), np.array([1000.0]), k=1, max_iter=5)
    np.testing.assert_allclose(result.mixture.means, [[7.0, 8.0, 9.0]])
    assert np.isfinite(result.mean_loglik)


# ---------------------------------------------------------------------------------- mixture algebra

def test_mixture_moments_closed_form_and_monte_carlo():
    rng = np.random.default_rng(7)
    mixture = random_mixture(rng, 4)
    mean, cov = gmm.mixture_moments(mixture)
    # Closed form written out independently: the law of total expectation and of total variance.
    expected_mean = sum(p * m for p, m in zip(mixture.weights, mixture.means))
    within = sum(p * c for p, c in zip(mixture.weights, mixture.covariances))
    between = sum(p * np.outer(m - expected_mean, m - expected_mean) for p, m in zip(mixture.weights, mixture.means))
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-12)
    np.testing.assert_allclose(cov, within + between, rtol=1e-10, atol=1e-10)
    draws = gmm.sample_mixture(mixture, 400_000, np.random.default_rng(8))
    sd = np.sqrt(np.diag(cov) / len(draws))
    assert (np.abs(draws.mean(axis=0) - mean) < 5 * sd).all()
    np.testing.assert_allclose(np.cov(draws.T), cov, rtol=0.02, atol=0.02 * np.abs(cov).max())


def mixture_cdf_along(mixture, direction, t):
    """The CDF of ``direction . x`` for x from the mixture (a 1-D Gaussian mixture)."""
    mus = mixture.means @ direction
    sds = np.sqrt(np.einsum("d,kde,e->k", direction, mixture.covariances, direction))
    return sum(p * scipy_stats.norm.cdf(t, m, s) for p, m, s in zip(mixture.weights, mus, sds))


def test_sum_of_mixtures_against_monte_carlo():
    rng = np.random.default_rng(9)
    first, second = random_mixture(rng, 3, scale=10.0), random_mixture(rng, 2, scale=10.0)
    total = gmm.sum_of_mixtures(first, second)
    assert len(total.weights) == 6
    np.testing.assert_allclose(total.weights.sum(), 1.0)
    draws = (gmm.sample_mixture(first, 100_000, np.random.default_rng(10))
             + gmm.sample_mixture(second, 100_000, np.random.default_rng(11)))
    mean, cov = gmm.mixture_moments(total)
    np.testing.assert_allclose(draws.mean(axis=0), mean, atol=5 * np.sqrt(np.diag(cov).max() / len(draws)))
    np.testing.assert_allclose(np.cov(draws.T), cov, rtol=0.03, atol=0.03 * np.abs(cov).max())
    # The whole distribution, not just two moments: Kolmogorov-Smirnov along two directions.
    wrong = gmm.Mixture(total.weights, total.means,
                        np.repeat(first.covariances, len(second.weights), axis=0))  # forgets Sigma_l
    for direction in (np.array([1.0, 0.0, 0.0]), np.array([0.3, -0.5, 0.8])):
        projected = draws @ direction
        assert scipy_stats.kstest(projected, lambda t: mixture_cdf_along(total, direction, t)).pvalue > 1e-3
        assert scipy_stats.kstest(projected, lambda t: mixture_cdf_along(wrong, direction, t)).pvalue < 1e-6
