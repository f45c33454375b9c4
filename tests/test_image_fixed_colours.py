"""--fixed-colours: colours that are palette entries exactly, counted in k, around which the other centres are
fitted. Checked against a plain numpy Lloyd with fixed centres, and by brute force on the written outputs: every
fixed colour is in every palette, and every pixel takes its nearest palette entry."""

import json

import numpy as np
import pytest
from conftest import read_png, save_png

from mixlib import quantise
from mixlib.fit.kmeans import fit_kmeans

FIXED = ["#ffffff", "#000000", "#e4002b"]  # white, black and a brand red
FIXED_RGB = np.array([[255, 255, 255], [0, 0, 0], [228, 0, 43]])


def reference_lloyd(x, weights, centres, fixed, tol):
    """Lloyd with the first ``fixed`` centres held, in plain numpy: nearest centre (the first on a tie), then the
    weighted mean of each other centre's points, until the summed squared shift is at most ``tol``."""
    centres = centres.astype(np.float64).copy()
    for _ in range(300):
        labels = ((x[:, None, :] - centres[None]) ** 2).sum(axis=2).argmin(axis=1)
        new = centres.copy()
        for j in range(fixed, len(centres)):
            mine = labels == j
            if weights[mine].sum() > 0:
                new[j] = weights[mine] @ x[mine] / weights[mine].sum()
        shift = ((new - centres) ** 2).sum()
        centres = new
        if shift <= tol:
            break
    return centres


def test_lloyd_with_fixed_centres_matches_plain_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 3)) * 40 + rng.integers(0, 4, (3000, 1)) * 50
    weights = rng.integers(1, 5, 3000).astype(np.float64)
    fixed = np.array([[0.0, 0.0, 0.0], [300.0, 10.0, 5.0]])
    start = np.vstack([fixed, x[:5]])
    ours = fit_kmeans(x, weights, k=7, init=start, fixed=fixed, tol=1e-12, in_process=True)
    variance = np.average((x - np.average(x, axis=0, weights=weights)) ** 2, axis=0, weights=weights).mean()
    expected = reference_lloyd(x, weights, start, 2, 1e-12 * variance)
    np.testing.assert_array_equal(ours.centres[:2], fixed)
    np.testing.assert_allclose(ours.centres, expected, rtol=1e-9, atol=1e-9)


def test_kmeans_plusplus_draws_around_the_fixed_centres():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 3))
    fixed = np.array([[5.0, 5.0, 5.0]])
    fit = fit_kmeans(x, k=4, fixed=fixed, seed=3, in_process=True)
    np.testing.assert_array_equal(fit.centres[0], fixed[0])
    assert len(np.unique(fit.centres, axis=0)) == 4


def assert_fixed_and_nearest(original, labels, palette, fixed):
    """Every fixed colour is a palette entry; a pixel of a fixed colour takes it; every pixel takes an entry at its
    smallest distance, to the rounding of the fitted centres to 8 bits (each entry moved by at most sqrt(C) / 2)."""
    for colour in fixed:
        assert (palette == colour).all(axis=1).any(), f"{colour} missing from the palette"
    flat, chosen = original.reshape(-1, original.shape[2]).astype(np.float64), labels.ravel()
    distances = np.sqrt(((flat[:, None, :] - palette[None].astype(np.float64)) ** 2).sum(axis=2))
    assert (distances[np.arange(len(flat)), chosen] <= distances.min(axis=1) + np.sqrt(flat.shape[1])).all()
    for colour in fixed:
        exact = (flat == colour).all(axis=1)
        assert (palette[chosen[exact]] == colour).all()


def with_fixed_pixels(image):
    """The image with a row of white, black and brand-red pixels."""
    marked = image.copy()
    marked[0, :30] = np.repeat(FIXED_RGB, 10, axis=0)
    return marked


def test_quantise_keeps_fixed_colours_and_nearest_entries(small_china):
    small_china = with_fixed_pixels(small_china)
    result = quantise(small_china, 12, fixed_colours=FIXED + ["#123456"], seed=2)
    assert len(result.palette) <= 12
    assert_fixed_and_nearest(small_china, result.labels, result.palette, np.vstack([FIXED_RGB, [[18, 52, 86]]]))


@pytest.mark.parametrize("method", ["lloyd", "minibatch"])
def test_job_outputs_carry_the_fixed_colours(run_job, capsys, tmp_path, small_china_png, small_china, method):
    out, report = tmp_path / f"{method}.png", tmp_path / f"{method}.json"
    assert run_job(small_china_png, "--out", out, "--k", "10", "--method", method, "--fixed-colours",
                   ",".join(FIXED[:2]), "--fixed-colours", FIXED[2], "--report", report) == 0, capsys.readouterr().err
    labels, palette, _, pixels = read_png(out)
    assert_fixed_and_nearest(small_china, labels, palette, FIXED_RGB)
    assert json.loads(report.read_text())["k_effective"] <= 10


def test_batch_outputs_carry_the_fixed_colours(run_job, capsys, tmp_path, small_china):
    folder = tmp_path / "in"
    save_png(folder / "a.png", small_china)
    save_png(folder / "b.png", small_china[::-1, :, ::-1])
    rgba = np.dstack([small_china, np.where(small_china[..., 0] > 100, 255, 0).astype(np.uint8)])
    save_png(folder / "c.png", rgba)
    report = tmp_path / "r.jsonl"
    assert run_job(folder, "--out", tmp_path / "out" / "{relpath}.png", "--k", "8", "--fixed-colours",
                   "#ffffff,#e4002b80", "--report", report) == 4  # the half-transparent red cannot go in RGB
    records = [json.loads(line) for line in report.read_text().splitlines()]
    assert sorted(r["status"] for r in records) == ["failed", "failed", "written"]
    assert all("needs an RGBA image" in r["reason"] for r in records if r["status"] == "failed")
    labels, palette, _, _ = read_png(tmp_path / "out" / "c.png")
    assert_fixed_and_nearest(rgba, labels, palette, np.array([[255, 255, 255, 255], [228, 0, 43, 128]]))
    assert run_job(folder, "--out", tmp_path / "out2" / "{relpath}.png", "--k", "8", "--fixed-colours",
                   "#ffffff,#e4002b") == 0
    for name, image in (("a", small_china), ("b", small_china[::-1, :, ::-1]), ("c", rgba)):
        labels, palette, _, _ = read_png(tmp_path / "out2" / f"{name}.png")
        fixed = FIXED_RGB[[0, 2]] if image.shape[2] == 3 else np.array([[255, 255, 255, 255], [228, 0, 43, 255]])
        assert_fixed_and_nearest(image, labels, palette, fixed)


@pytest.mark.parametrize("flags, message", [
    (("--fixed-colours", "#12345"), "is not a colour"),
    (("--fixed-colours", "#ff0000,#00ff00,#0000ff", "--k", "2"), "do not fit in --k 2"),
    (("--fixed-colours", "#ff0000", "--method", "gmm"), "needs a k-means palette"),
    (("--fixed-colours", "#ff000080"), "needs an RGBA image"),
])
def test_bad_fixed_colours_exit_2(run_job, capsys, tmp_path, small_china_png, flags, message):
    assert run_job(small_china_png, "--out", tmp_path / "x.png", *flags) == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "x.png").exists()


def test_target_psnr_with_fixed_colours(small_china):
    result = quantise(small_china, 32, fixed_colours=FIXED, target_psnr=28.0)
    assert result.psnr >= 28.0 and min(k for k, _ in result.tried) >= 3
    assert_fixed_and_nearest(small_china, result.labels, result.palette, FIXED_RGB)
