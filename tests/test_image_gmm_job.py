"""Job-level tests of ``python -m jobs.compress --method gmm``: the report and the output against scipy,
the saved model file, degenerate images, and determinism across chunkings and clusters.

Runs call ``jobs.compress.main`` in this process against the session cluster (``run_job``). The references
are computed here with scipy on every pixel, never with mixlib's own kernels.
"""

import json
import math

import numpy as np
import pytest
from conftest import read_png, save_png
from scipy import stats as scipy_stats
from scipy.special import logsumexp
from test_image_compress_job import assert_usage_error

# ------------------------------------------------------------------------------------------ helpers

def strict_json(path):
    """Parse a JSON file, rejecting the NaN / Infinity tokens that Python's json writes for non-finite floats."""
    def refuse(token):
        raise AssertionError(f"{path} holds the non-finite number {token}")

    with open(path) as f:
        return json.load(f, parse_constant=refuse)


def numbers_in(value):
    """Every int or float inside a JSON document."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return []
    if isinstance(value, (int, float)):
        return [value]
    if isinstance(value, dict):
        return [n for v in value.values() for n in numbers_in(v)]
    return [n for v in value for n in numbers_in(v)]


def mixture_arrays(document):
    return tuple(np.asarray(document[key], dtype=np.float64) for key in ("weights", "means", "covariances"))


def joint_log_densities(pixels, weights, means, covariances):
    """``log(w_j N(x_i | mu_j, Sigma_j))`` as (n, k), from scipy's multivariate normal."""
    return np.column_stack([
        np.log(w) + np.atleast_1d(scipy_stats.multivariate_normal(m, c).logpdf(pixels)).reshape(len(pixels))
        for w, m, c in zip(weights, means, covariances)])


def check_mixture(mixture, k_max, dims=3):
    weights, means, covariances = mixture_arrays(mixture)
    k = len(weights)
    assert 1 <= k <= k_max
    assert weights.shape == (k,) and means.shape == (k, dims) and covariances.shape == (k, dims, dims)
    assert (weights > 0).all()
    assert weights.sum() == pytest.approx(1.0, abs=1e-9)
    scale = np.abs(covariances).max()
    np.testing.assert_allclose(covariances, np.transpose(covariances, (0, 2, 1)), rtol=1e-12, atol=1e-12 * scale)
    assert (np.linalg.eigvalsh(covariances) > 0).all()
    return weights, means, covariances


def check_against_scipy(report, image):
    """The report's log-likelihood, BIC and the output's pixels, recomputed from the reported mixture."""
    weights, means, covariances = mixture_arrays(report["mixture"])
    k, dims = means.shape
    pixels = np.asarray(image).reshape(-1, dims).astype(np.float64)
    n = len(pixels)
    joint = joint_log_densities(pixels, weights, means, covariances)
    loglik = logsumexp(joint, axis=1)
    assert report["mean_loglik_per_pixel"] == pytest.approx(loglik.mean(), rel=1e-6)
    parameters = (k - 1) + k * dims + k * dims * (dims + 1) // 2
    assert report["bic"] == pytest.approx(-2 * loglik.sum() + parameters * math.log(n), rel=1e-6, abs=1e-6)
    # The job's own BIC is exactly the formula applied to its own log-likelihood.
    assert report["bic"] == pytest.approx(-2 * report["mean_loglik_per_pixel"] * n + parameters * math.log(n),
                                          rel=1e-12, abs=1e-9)
    best = joint.argmax(axis=1)
    expected = np.clip(np.rint(means[best]), 0, 255).astype(np.uint8).reshape(np.shape(image))
    return expected


@pytest.fixture
def crop(small_china):
    """A 64x48 crop of small china (still about two thousand distinct colours)."""
    pixels = np.ascontiguousarray(np.asarray(small_china)[30:78, 50:114])
    assert pixels.shape == (48, 64, 3)
    return pixels


# ----------------------------------------------------------------------------- report and output

def test_gmm_report_output_and_model(run_job, capsys, tmp_path, small_china_png, small_china):
    out, report_path, model_path = tmp_path / "g.png", tmp_path / "r.json", tmp_path / "m.json"
    status = run_job(small_china_png, "--method", "gmm", "--k", "4", "--out", out, "--report", report_path,
                     "--save-model", model_path, "--seed", "1")
    assert status == 0, capsys.readouterr().err

    report = strict_json(report_path)
    assert report["method"] == "gmm"
    for key in ("mixture", "mean_loglik_per_pixel", "bic", "em_iterations"):
        assert key in report
    weights, means, covariances = check_mixture(report["mixture"], 4)
    assert len(weights) == 4  # thousands of distinct colours: all four components are fitted
    assert isinstance(report["em_iterations"], int) and 1 <= report["em_iterations"] <= 300

    expected = check_against_scipy(report, small_china)
    labels, palette, mode, rgb = read_png(out)
    assert mode == "P"
    np.testing.assert_array_equal(rgb, expected)
    assert len(np.unique(palette, axis=0)) == len(palette)
    assert {tuple(c) for c in palette} == {tuple(c) for c in expected.reshape(-1, 3)}
    assert report["palette"] == palette.tolist()

    # The model file is plain JSON (json.load, nothing unpickled) with the report's parameters, to the bit.
    with open(model_path) as f:
        model = json.load(f)
    assert model["format"] == "mixlib-gaussian-mixture"
    for key in ("weights", "means", "covariances"):
        assert model[key] == report["mixture"][key], key
    assert model["channels"] == 3
    assert model["mean_loglik_per_pixel"] == report["mean_loglik_per_pixel"]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("extra,words", [
    (["--method", "lloyd", "--save-model", "m.json"], ["--save-model", "gmm"]),
    (["--method", "gmm", "--save-model", "x.txt"], ["x.txt"]),
], ids=["lloyd", "not-json-suffix"])
def test_save_model_usage_errors(run_job, capsys, tmp_path, small_china_png, extra, words):
    outdir = tmp_path / "out"
    outdir.mkdir()
    argv = [outdir / a if a.endswith((".json", ".txt")) else a for a in extra]
    status = run_job(small_china_png, "--k", "4", "--out", outdir / "r.png", *argv)
    line = assert_usage_error(status, capsys.readouterr().err, outdir)
    for word in words:
        assert word in line


# ------------------------------------------------------------------------------- few colours, tiny

@pytest.mark.parametrize("shape", [(20, 30), (1, 1)], ids=["one-colour", "one-pixel"])
def test_one_colour_image(run_job, capsys, tmp_path, shape):
    pixels = np.empty(shape + (3,), np.uint8)
    pixels[...] = [12, 200, 99]
    source = save_png(tmp_path / "flat.png", pixels)
    out, report_path, model_path = tmp_path / "flat-out.png", tmp_path / "flat.json", tmp_path / "flat-model.json"
    status = run_job(source, "--method", "gmm", "--k", "3", "--out", out, "--report", report_path,
                     "--save-model", model_path)
    assert status == 0, capsys.readouterr().err

    report = strict_json(report_path)
    model = strict_json(model_path)
    assert all(math.isfinite(n) for n in numbers_in(report)) and numbers_in(report["mixture"])
    assert all(math.isfinite(n) for n in numbers_in(model))
    weights, means, _ = check_mixture(report["mixture"], 3)
    np.testing.assert_allclose(means, np.broadcast_to([12.0, 200.0, 99.0], means.shape), atol=1e-6)
    labels, palette, mode, rgb = read_png(out)
    np.testing.assert_array_equal(palette, [[12, 200, 99]])
    np.testing.assert_array_equal(rgb, pixels)
    np.testing.assert_array_equal(check_against_scipy(report, pixels), pixels)


def test_two_colours_and_five_components(run_job, capsys, tmp_path):
    colours = np.array([[10, 20, 30], [200, 100, 50]], np.uint8)
    pixels = colours[np.random.default_rng(31).integers(0, 2, size=(40, 50))]
    source = save_png(tmp_path / "two.png", pixels)
    out, report_path = tmp_path / "two-out.png", tmp_path / "two.json"
    status = run_job(source, "--method", "gmm", "--k", "5", "--out", out, "--report", report_path)
    assert status == 0, capsys.readouterr().err

    report = strict_json(report_path)
    assert all(math.isfinite(n) for n in numbers_in(report))
    check_mixture(report["mixture"], 5)
    labels, palette, mode, rgb = read_png(out)
    assert len(palette) <= 2
    assert len(np.unique(palette, axis=0)) == len(palette)
    np.testing.assert_array_equal(rgb, check_against_scipy(report, pixels))
    # Each colour is its own component: the image comes back unchanged.
    np.testing.assert_array_equal(rgb, pixels)


# ---------------------------------------------------------------------------------- determinism

def test_gmm_output_does_not_depend_on_chunks_or_workers(run_job, capsys, tmp_path, small_china_png,
                                                         one_worker_address):
    runs = [("64", None), ("4096", None), ("64", one_worker_address)]
    outputs, models = [], []
    for i, (chunk_size, scheduler) in enumerate(runs):
        out, model = tmp_path / f"run{i}" / "g.png", tmp_path / f"run{i}" / "m.json"
        argv = [small_china_png, "--method", "gmm", "--k", "4", "--seed", "3", "--out", out, "--save-model",
                model, "--chunk-size", chunk_size]
        if scheduler:
            argv += ["--scheduler", scheduler]
        assert run_job(*argv) == 0, capsys.readouterr().err
        outputs.append(out.read_bytes())
        models.append(model.read_bytes())
    assert outputs[0] and models[0]
    for i in (1, 2):
        assert outputs[i] == outputs[0], runs[i]
        assert models[i] == models[0], runs[i]


def test_random_init_is_valid_and_deterministic(run_job, capsys, tmp_path, crop):
    source = save_png(tmp_path / "crop.png", crop)
    results = []
    for run in ("a", "b"):
        out, report_path, model = (tmp_path / run / name for name in ("g.png", "r.json", "m.json"))
        status = run_job(source, "--method", "gmm", "--em-init", "random", "--k", "3", "--seed", "7",
                         "--out", out, "--report", report_path, "--save-model", model)
        assert status == 0, capsys.readouterr().err
        results.append((out.read_bytes(), model.read_bytes(), strict_json(report_path)))
    (png, model, report), (png_b, model_b, report_b) = results
    assert png_b == png
    assert model_b == model
    assert report_b["mixture"] == report["mixture"]

    assert math.isfinite(report["mean_loglik_per_pixel"])
    check_mixture(report["mixture"], 3)
    rgb = read_png(tmp_path / "a" / "g.png")[3]
    np.testing.assert_array_equal(rgb, check_against_scipy(report, crop))
