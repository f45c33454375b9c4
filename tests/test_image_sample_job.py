"""Job-level tests of ``python -m jobs.sample``: the drawn image against the mixture's closed-form moments
and 1-D CDFs, independence of neighbouring pixels, determinism across chunkings, formats and clusters, and
one-line usage errors.

Runs call ``jobs.sample.main`` in this process against the session cluster (``run_sample``). Model files
are written here with ``save_mixture`` from known parameters.
"""

import json
import pickle

import numpy as np
import pytest
from conftest import save_png
from PIL import Image
from scipy import stats as scipy_stats
from test_image_compress_job import assert_usage_error, find_subimage

from mixlib.fit.gmm import Mixture, mixture_moments, save_mixture


def covariance(sds, correlation):
    scale = np.diag(sds)
    return scale @ np.asarray(correlation, dtype=np.float64) @ scale


# Means well inside 0..255: every component is at least 5.4 standard deviations from 0 and 255 along each
# channel, so clipping touches well under one pixel in a million.
WEIGHTS = np.array([0.3, 0.45, 0.25])
MEANS = np.array([[60.0, 75.0, 55.0], [128.0, 120.0, 140.0], [190.0, 180.0, 195.0]])
COVARIANCES = np.stack([
    covariance([10, 12, 9], [[1, 0.5, 0.3], [0.5, 1, 0.4], [0.3, 0.4, 1]]),
    covariance([15, 13, 14], [[1, -0.3, 0.2], [-0.3, 1, 0.1], [0.2, 0.1, 1]]),
    covariance([8, 10, 11], [[1, 0.6, 0.5], [0.6, 1, 0.7], [0.5, 0.7, 1]]),
])
MODEL = Mixture(WEIGHTS, MEANS, COVARIANCES)

# The same, with a fourth (alpha) channel independent of the colour.
MODEL_RGBA = Mixture(
    WEIGHTS,
    np.column_stack([MEANS, [200.0, 120.0, 60.0]]),
    np.stack([np.block([[c, np.zeros((3, 1))], [np.zeros((1, 3)), np.array([[s * s]])]])
              for c, s in zip(COVARIANCES, [9.0, 12.0, 8.0])]),
)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "three.json"
    save_mixture(path, MODEL, {})
    return path


@pytest.fixture(scope="module")
def rgba_model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "rgba.json"
    save_mixture(path, MODEL_RGBA, {})
    return path



def read_rgb(path):
    with Image.open(path) as im:
        im.load()
        return im.mode, im.size, np.asarray(im)


def mixture_cdf_along(mixture, direction, t, extra_variance=0.0):
    """CDF of ``direction . x`` for x from the mixture plus independent noise of ``extra_variance`` per
    channel: a 1-D Gaussian mixture, from scipy's normal CDF."""
    mus = mixture.means @ direction
    variances = np.einsum("d,kde,e->k", direction, mixture.covariances, direction)
    sds = np.sqrt(variances + extra_variance * direction @ direction)
    return sum(p * scipy_stats.norm.cdf(t, m, s) for p, m, s in zip(mixture.weights, mus, sds))


def dithered(pixels, seed=0):
    """Integer pixels plus independent uniform(-1/2, 1/2) noise.

    Rounding a smooth density with standard deviations >> 1 adds (to far better than the tests need) an
    independent uniform(-1/2, 1/2) error per channel (Sheppard); with the dither the pixels are the mixture
    plus triangular noise of variance 1/6 per channel, continuous, so the KS p-values are exact enough."""
    return pixels + np.random.default_rng(seed).uniform(-0.5, 0.5, size=pixels.shape)


DIRECTIONS = [np.array([1.0, 0.0, 0.0]), np.array([0.3, -0.5, 0.8]), np.array([0.6, 0.6, -0.5])]


# ------------------------------------------------------------------------------ the distribution

@pytest.fixture(scope="module")
def sampled_300x400(tmp_path_factory, model_path, scheduler_address, empty_config):
    """One 300x400 sample (seed 11), drawn once for the statistical tests of this module."""
    import logging

    import jobs.sample

    out = tmp_path_factory.mktemp("sample") / "s.png"
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        status = jobs.sample.main(["--model", str(model_path), "--shape", "300x400", "--out", str(out),
                                   "--seed", "11", "--chunk-size", "256", "--scheduler", scheduler_address,
                                   "--config", str(empty_config), "--log-level", "warning"])
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert status == 0
    return out


def test_shape_and_mode(sampled_300x400):
    mode, size, pixels = read_rgb(sampled_300x400)
    assert mode == "RGB"
    assert size == (400, 300)  # Pillow: (width, height)
    assert pixels.shape == (300, 400, 3)
    assert not [p.name for p in sampled_300x400.parent.iterdir() if p.name.startswith(".")]


def test_moments_match_the_mixture(sampled_300x400):
    pixels = read_rgb(sampled_300x400)[2].reshape(-1, 3).astype(np.float64)
    n = len(pixels)
    mean, cov = mixture_moments(MODEL)
    # Closed form, written out here too (law of total expectation and variance).
    np.testing.assert_allclose(mean, WEIGHTS @ MEANS, rtol=1e-12)
    between = sum(w * np.outer(m - mean, m - mean) for w, m in zip(WEIGHTS, MEANS))
    np.testing.assert_allclose(cov, np.einsum("k,kde->de", WEIGHTS, COVARIANCES) + between, rtol=1e-10)
    cov_rounded = cov + np.eye(3) / 12  # rounding to integers adds a uniform(-1/2, 1/2) error per channel
    standard_error = np.sqrt(np.diag(cov_rounded) / n)
    assert (np.abs(pixels.mean(axis=0) - mean) < 5 * standard_error).all(), (pixels.mean(axis=0), mean)
    np.testing.assert_allclose(np.cov(pixels.T), cov_rounded, rtol=0.03, atol=0.03 * np.abs(cov_rounded).max())


def test_projections_follow_the_mixture_cdf(sampled_300x400):
    """Kolmogorov-Smirnov along three directions: the per-component structure, not just two moments.

    A mixture without the correlations (what a sampler that scales standard normals by the standard
    deviations would draw) must fail along the oblique directions."""
    pixels = dithered(read_rgb(sampled_300x400)[2].reshape(-1, 3).astype(np.float64))
    uncorrelated = Mixture(WEIGHTS, MEANS, np.stack([np.diag(np.diag(c)) for c in COVARIANCES]))
    transposed_factor = Mixture(WEIGHTS, MEANS, np.stack([L.T @ L for L in np.linalg.cholesky(COVARIANCES)]))
    for direction in DIRECTIONS:
        projected = pixels @ direction
        right = scipy_stats.kstest(projected, lambda t: mixture_cdf_along(MODEL, direction, t, 1 / 6))
        assert right.pvalue > 1e-3, (direction, right)
        wrong = scipy_stats.kstest(projected, lambda t: mixture_cdf_along(transposed_factor, direction, t, 1 / 6))
        assert wrong.pvalue < 1e-6, (direction, wrong)
        if direction[1:].any():
            wrong = scipy_stats.kstest(projected, lambda t: mixture_cdf_along(uncorrelated, direction, t, 1 / 6))
            assert wrong.pvalue < 1e-6, (direction, wrong)


def test_pixels_are_independent_draws(sampled_300x400):
    """No spatial structure: neighbours, pixels a stream tile apart, and the draws of different tiles are
    uncorrelated (a tile reusing another tile's stream would repeat its component choices)."""
    pixels = read_rgb(sampled_300x400)[2].astype(np.float64)

    def correlation(a, b):
        return np.array([np.corrcoef(a[..., c].ravel(), b[..., c].ravel())[0, 1] for c in range(3)])

    assert (np.abs(correlation(pixels[:, :-1], pixels[:, 1:])) < 0.02).all()
    assert (np.abs(correlation(pixels[:-1], pixels[1:])) < 0.02).all()
    assert (np.abs(correlation(pixels[:, :144], pixels[:, 256:])) < 0.03).all()
    assert (np.abs(correlation(pixels[:44], pixels[256:])) < 0.04).all()
    # The 256x256 stream tiles, each flattened in row order; compare their first 44 x 144 draws.
    tiles = [pixels[:256, :256], pixels[:256, 256:], pixels[256:, :256], pixels[256:, 256:]]
    draws = [t.reshape(-1, 3)[:44 * 144] for t in tiles]
    for i in range(4):
        for j in range(i + 1, 4):
            assert (np.abs(correlation(draws[i], draws[j])) < 0.07).all(), (i, j)
    # Components are not laid out in runs: long stretches of one component would show as a smooth image.
    component = np.argmin(((pixels[..., None, :] - MEANS) ** 2).sum(axis=-1), axis=-1)
    changes = (component[:, 1:] != component[:, :-1]).mean()
    shares = np.bincount(component.ravel(), minlength=3) / component.size
    assert np.abs(shares - WEIGHTS).max() < 0.01, shares
    expected_changes = 1 - (shares ** 2).sum()  # neighbours independent: P(different labels)
    assert abs(changes - expected_changes) < 0.02, (changes, expected_changes)


# ------------------------------------------------------------------------------- determinism, I/O

def test_output_does_not_depend_on_chunks_formats_or_workers(run_sample, capsys, tmp_path, model_path,
                                                             one_worker_address):
    import tifffile
    import zarr

    common = ["--model", model_path, "--shape", "300x600", "--seed", "4"]
    pngs = {}
    for chunk_size in ("256", "300", "512", "4096"):
        out = tmp_path / f"chunk{chunk_size}" / "s.png"
        assert run_sample(*common, "--out", out, "--chunk-size", chunk_size) == 0, capsys.readouterr().err
        pngs[chunk_size] = out.read_bytes()
    reference = pngs["256"]
    assert reference
    for chunk_size, data in pngs.items():
        assert data == reference, chunk_size

    one_worker = tmp_path / "one-worker" / "s.png"
    assert run_sample(*common, "--out", one_worker, "--chunk-size", "512",
                      "--scheduler", one_worker_address) == 0, capsys.readouterr().err
    assert one_worker.read_bytes() == reference

    mode, size, pixels = read_rgb(tmp_path / "chunk256" / "s.png")
    assert mode == "RGB" and pixels.shape == (300, 600, 3)
    tif, store = tmp_path / "formats" / "s.tif", tmp_path / "formats" / "s.zarr"
    assert run_sample(*common, "--out", tif, "--chunk-size", "512", "--tile-size", "128") == 0, \
        capsys.readouterr().err
    assert run_sample(*common, "--out", store, "--chunk-size", "256", "--tile-size", "128") == 0, \
        capsys.readouterr().err
    with tifffile.TiffFile(tif) as t:
        assert t.pages.first.is_tiled
        np.testing.assert_array_equal(t.pages.first.asarray(), pixels)
    array = zarr.open_array(str(store), mode="r")
    assert array.shape == (300, 600, 3) and array.dtype == np.uint8
    np.testing.assert_array_equal(array[...], pixels)
    assert not [p.name for p in (tmp_path / "formats").iterdir() if p.name.startswith(".")]

    other = tmp_path / "seed5" / "s.png"
    assert run_sample("--model", model_path, "--shape", "300x600", "--seed", "5", "--out", other) == 0, \
        capsys.readouterr().err
    other_pixels = read_rgb(other)[2]
    assert other_pixels.shape == pixels.shape
    # Two independent draws agree on a pixel only by chance (a few percent at most, not a shifted copy).
    assert (other_pixels == pixels).all(axis=-1).mean() < 0.01


def test_seed_placeholder_in_out(run_sample, capsys, tmp_path, model_path):
    status = run_sample("--model", model_path, "--shape", "8x9", "--seed", "42",
                        "--out", str(tmp_path / "s-{seed}.png"))
    assert status == 0, capsys.readouterr().err
    assert read_rgb(tmp_path / "s-42.png")[1] == (9, 8)


def test_like_takes_the_size_and_compare_holds_both(run_sample, capsys, tmp_path, model_path, small_china):
    like_pixels = np.ascontiguousarray(np.asarray(small_china)[:37, :53])
    like = save_png(tmp_path / "like.png", like_pixels)
    out, compare = tmp_path / "s.png", tmp_path / "side.png"
    status = run_sample("--model", model_path, "--like", like, "--out", out, "--compare", compare, "--seed", "2")
    assert status == 0, capsys.readouterr().err

    mode, size, sample = read_rgb(out)
    assert mode == "RGB" and sample.shape == (37, 53, 3)
    with Image.open(compare) as im:
        assert im.format == "PNG"
        side = np.asarray(im.convert("RGB"))
    assert side.shape[1] > 2 * 53 and side.shape[0] >= 37
    # Small enough not to be downscaled: both images are in the comparison pixel for pixel.
    at_original, at_sample = find_subimage(side, like_pixels), find_subimage(side, sample)
    assert at_original is not None and at_sample is not None
    assert at_original[1] + 53 <= at_sample[1]
    assert at_sample[1] >= side.shape[1] // 2


def test_rgba_model_gives_rgba(run_sample, capsys, tmp_path, rgba_model_path, small_china):
    out = tmp_path / "rgba.png"
    assert run_sample("--model", rgba_model_path, "--shape", "120x150", "--out", out, "--seed", "3") == 0, \
        capsys.readouterr().err
    mode, size, pixels = read_rgb(out)
    assert mode == "RGBA" and pixels.shape == (120, 150, 4)
    flat = pixels.reshape(-1, 4).astype(np.float64)
    mean, cov = mixture_moments(MODEL_RGBA)
    standard_error = np.sqrt((np.diag(cov) + 1 / 12) / len(flat))
    assert (np.abs(flat.mean(axis=0) - mean) < 5 * standard_error).all(), (flat.mean(axis=0), mean)

    # An RGB photo beside an RGBA sample: the comparison still shows the sample exactly.
    like = save_png(tmp_path / "like.png", np.asarray(small_china)[:20, :30])
    out, compare = tmp_path / "rgba-like.png", tmp_path / "rgba-side.png"
    assert run_sample("--model", rgba_model_path, "--like", like, "--out", out, "--compare", compare) == 0, \
        capsys.readouterr().err
    mode, size, sample = read_rgb(out)
    assert mode == "RGBA" and sample.shape == (20, 30, 4)
    with Image.open(compare) as im:
        side = np.asarray(im.convert("RGBA"))
    assert find_subimage(side, sample) is not None


def test_model_fitted_by_compress_samples(run_job, run_sample, capsys, tmp_path, small_china):
    """The round trip of the README: compress --method gmm --save-model, then sample --like the photo."""
    photo = save_png(tmp_path / "photo.png", np.asarray(small_china)[:48, :64])
    model = tmp_path / "fitted.json"
    assert run_job(photo, "--method", "gmm", "--k", "3", "--out", tmp_path / "c.png", "--save-model", model) == 0, \
        capsys.readouterr().err
    out = tmp_path / "s.tif"
    assert run_sample("--model", model, "--like", photo, "--out", out) == 0, capsys.readouterr().err
    import tifffile

    assert tifffile.imread(out).shape == (48, 64, 3)


# ----------------------------------------------------------------------------------- bad inputs

def _model_document(**changes):
    document = {"format": "mixlib-gaussian-mixture", "version": 1, "weights": WEIGHTS.tolist(),
                "means": MEANS.tolist(), "covariances": COVARIANCES.tolist()}
    document.update(changes)
    return {k: v for k, v in document.items() if v is not _DROP}


_DROP = object()


def _write(tmp_path, name, content):
    path = tmp_path / "models" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content)
    else:
        path.write_text(json.dumps(content))
    return path


def _covariances_with(index, matrix):
    covariances = COVARIANCES.copy()
    covariances[index] = matrix
    return covariances.tolist()


def _not_symmetric():
    # The lower triangle (all a Cholesky factorisation reads) is positive definite; the upper one differs.
    matrix = COVARIANCES[1].copy()
    matrix[0, 2] += 25.0
    return _covariances_with(1, matrix)


def _corrupt_png(tmp_path, small_china):
    import io

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(small_china)).save(buffer, format="PNG")
    return _write(tmp_path, "half.png", buffer.getvalue()[:len(buffer.getvalue()) // 2])


def _model(tmp_path, **changes):
    return _write(tmp_path, "model.json", _model_document(**changes))


def _file_in(folder):
    path = folder / "file.txt"
    path.write_text("a regular file, not a folder\n")
    return path


# Each case: (id, build(tmp_path, model_path, outdir, small_china) -> (argv, words the message must contain,
# names left in outdir)).
BAD_INPUTS = [
    ("missing-model", lambda t, m, out, img: (["--shape", "10x10", "--out", out / "s.png"], ["--model"], [])),
    ("model-file-missing", lambda t, m, out, img: (
        ["--model", t / "nope.json", "--shape", "10x10", "--out", out / "s.png"], ["nope.json", "does not exist"],
        [])),
    ("model-not-json", lambda t, m, out, img: (
        ["--model", _write(t, "text.json", "weights: [1]\n{{{"), "--shape", "10x10", "--out", out / "s.png"],
        ["text.json", "JSON"], [])),
    ("model-pickled", lambda t, m, out, img: (
        ["--model", _write(t, "model.pkl", pickle.dumps(MODEL)), "--shape", "10x10", "--out", out / "s.png"],
        ["model.pkl"], [])),
    ("json-not-a-mixture", lambda t, m, out, img: (
        ["--model", _model(t, format=_DROP), "--shape", "10x10", "--out", out / "s.png"], ["format"], [])),
    ("json-list", lambda t, m, out, img: (
        ["--model", _write(t, "list.json", [1, 2, 3]), "--shape", "10x10", "--out", out / "s.png"], ["list.json"],
        [])),
    ("no-covariances", lambda t, m, out, img: (
        ["--model", _model(t, covariances=_DROP), "--shape", "10x10", "--out", out / "s.png"], ["model.json"], [])),
    ("mismatched-means", lambda t, m, out, img: (
        ["--model", _model(t, means=MEANS[:2].tolist()), "--shape", "10x10", "--out", out / "s.png"],
        ["shapes"], [])),
    ("two-channel-means", lambda t, m, out, img: (
        ["--model", _model(t, means=MEANS[:, :2].tolist()), "--shape", "10x10", "--out", out / "s.png"],
        ["shapes"], [])),
    ("mismatched-covariances", lambda t, m, out, img: (
        ["--model", _model(t, covariances=COVARIANCES[:, :2, :2].tolist()), "--shape", "10x10",
         "--out", out / "s.png"], ["shapes"], [])),
    ("ragged-means", lambda t, m, out, img: (
        ["--model", _model(t, means=[[60, 75, 55], [128, 120], [190, 180, 195]]), "--shape", "10x10",
         "--out", out / "s.png"], ["model.json"], [])),
    ("weights-a-number", lambda t, m, out, img: (
        ["--model", _model(t, weights=1.0), "--shape", "10x10", "--out", out / "s.png"], ["model.json"], [])),
    ("weights-null", lambda t, m, out, img: (
        ["--model", _model(t, weights=None), "--shape", "10x10", "--out", out / "s.png"], ["model.json"], [])),
    ("weights-not-summing-to-1", lambda t, m, out, img: (
        ["--model", _model(t, weights=[0.3, 0.3, 0.3]), "--shape", "10x10", "--out", out / "s.png"],
        ["weights"], [])),
    ("negative-weight", lambda t, m, out, img: (
        ["--model", _model(t, weights=[-0.1, 0.6, 0.5]), "--shape", "10x10", "--out", out / "s.png"],
        ["weights"], [])),
    ("nan-mean", lambda t, m, out, img: (
        ["--model", _write(t, "nan.json",
                           json.dumps(_model_document(means=[[float("nan"), 75, 55]] + MEANS[1:].tolist()))),
         "--shape", "10x10", "--out", out / "s.png"], ["non-finite"], [])),
    ("covariance-not-positive-definite", lambda t, m, out, img: (
        ["--model", _model(t, covariances=_covariances_with(2, np.diag([100.0, -1.0, 50.0]))), "--shape", "10x10",
         "--out", out / "s.png"], ["positive definite"], [])),
    ("covariance-not-symmetric", lambda t, m, out, img: (
        ["--model", _model(t, covariances=_not_symmetric()), "--shape", "10x10", "--out", out / "s.png"],
        ["symmetric"], [])),
    ("shape-zero", lambda t, m, out, img: (["--model", m, "--shape", "10x0", "--out", out / "s.png"],
                                           ["--shape", "10x0"], [])),
    ("shape-abc", lambda t, m, out, img: (["--model", m, "--shape", "abc", "--out", out / "s.png"],
                                          ["--shape", "abc"], [])),
    ("shape-star", lambda t, m, out, img: (["--model", m, "--shape", "10*10", "--out", out / "s.png"],
                                           ["--shape", "10*10"], [])),
    ("like-and-shape", lambda t, m, out, img: (
        ["--model", m, "--shape", "10x10", "--like", save_png(t / "like.png", np.asarray(img)),
         "--out", out / "s.png"], ["--like", "--shape"], [])),
    ("neither-like-nor-shape", lambda t, m, out, img: (["--model", m, "--out", out / "s.png"],
                                                       ["--like", "--shape"], [])),
    ("compare-without-like", lambda t, m, out, img: (
        ["--model", m, "--shape", "10x10", "--out", out / "s.png", "--compare", out / "c.png"],
        ["--compare", "--like"], [])),
    ("out-under-a-regular-file", lambda t, m, out, img: (
        ["--model", m, "--shape", "10x10", "--out", _file_in(out) / "s.png"], ["cannot write", "s.png"],
        ["file.txt"])),
    ("out-unknown-format", lambda t, m, out, img: (
        ["--model", m, "--shape", "10x10", "--out", out / "s.jpg"], ["s.jpg"], [])),
    ("out-equals-compare", lambda t, m, out, img: (
        ["--model", m, "--like", save_png(t / "like.png", np.asarray(img)), "--out", out / "s.png",
         "--compare", out / "s.png"], ["different"], [])),
    ("like-missing", lambda t, m, out, img: (
        ["--model", m, "--like", t / "missing.png", "--out", out / "s.png"], ["missing.png", "does not exist"], [])),
    ("like-corrupt", lambda t, m, out, img: (
        ["--model", m, "--like", _corrupt_png(t, img), "--out", out / "s.png"], ["half.png"], [])),
    ("like-not-an-image", lambda t, m, out, img: (
        ["--model", m, "--like", _write(t, "text.png", "only text\n" * 20), "--out", out / "s.png"],
        ["text.png"], [])),
]


@pytest.mark.parametrize("build", [case[1] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_is_one_line_and_exit_status_2(run_sample, capsys, tmp_path, model_path, outdir, small_china,
                                                 build):
    argv, words, leftovers = build(tmp_path, model_path, outdir, small_china)
    status = run_sample(*argv)
    line = assert_usage_error(status, capsys.readouterr().err, outdir, leftovers)
    for word in words:
        assert word in line, line


def test_existing_output_is_kept_without_overwrite(run_sample, capsys, model_path, outdir):
    out = outdir / "s.png"
    out.write_bytes(b"precious, not an image")
    line = assert_usage_error(run_sample("--model", model_path, "--shape", "10x10", "--out", out),
                              capsys.readouterr().err, outdir, ["s.png"])
    assert "--overwrite" in line
    assert out.read_bytes() == b"precious, not an image"

    assert run_sample("--model", model_path, "--shape", "10x12", "--out", out, "--overwrite") == 0, \
        capsys.readouterr().err
    assert read_rgb(out)[1] == (12, 10)
    assert sorted(p.name for p in outdir.iterdir()) == ["s.png"]


def test_weights_rounded_within_the_loaders_tolerance_still_sample(run_sample, capsys, tmp_path, outdir):
    """The loader accepts weights that sum to 1 within 1e-6 (hand-written or rounded models); such a model
    must then sample (or be refused with a usage error), not crash on the workers."""
    model = _model(tmp_path, weights=[0.3, 0.45, 0.2500005])  # sums to 1 + 5e-7
    status = run_sample("--model", model, "--shape", "20x30", "--out", outdir / "s.png")
    err = capsys.readouterr().err
    assert status == 0, err
    assert read_rgb(outdir / "s.png")[2].shape == (20, 30, 3)
