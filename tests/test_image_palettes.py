"""--palette-out and --palette: a fitted palette saved (JSON, PNG swatch) and applied without fitting, whole and in
its order, to single images and batches. Brute force checks that every pixel takes its nearest entry."""

import json

import numpy as np
import pytest
from conftest import read_png, save_png
from PIL import Image


def plte(path):
    """The PLTE entries of a PNG, in the file's order, ``(p, 3)``."""
    with Image.open(path) as image:
        return np.array(image.getpalette(), dtype=np.uint8).reshape(-1, 3)


def assert_nearest(original, pixels, palette):
    """Every pixel of ``pixels`` is the entry of ``palette`` nearest to the pixel of ``original`` (exactly)."""
    flat = original.reshape(-1, original.shape[2]).astype(np.float64)
    distances = ((flat[:, None, :] - palette[None].astype(np.float64)) ** 2).sum(axis=2)
    chosen = pixels.reshape(-1, pixels.shape[2]).astype(np.float64)
    np.testing.assert_array_equal(((flat - chosen) ** 2).sum(axis=1), distances.min(axis=1))


def test_palette_out_then_in(run_job, capsys, tmp_path, small_china_png, small_china):
    folder = tmp_path / "p"
    assert run_job(small_china_png, "--out", folder / "a.png", "--k", "12", "--palette-out", folder / "p.json",
                   "--report", folder / "a.json") == 0, capsys.readouterr().err
    assert run_job(small_china_png, "--out", folder / "b.png", "--k", "12", "--palette-out", folder / "p.png") == 0
    saved = np.array(json.loads((folder / "p.json").read_text())["colours"], dtype=np.uint8)
    np.testing.assert_array_equal(saved, json.loads((folder / "a.json").read_text())["palette"])
    np.testing.assert_array_equal(plte(folder / "p.png"), saved)  # the swatch's PLTE is the palette, in order
    for palette_file in ("p.json", "p.png"):
        out = folder / f"again-{palette_file}.png"
        assert run_job(small_china_png, "--out", out, "--palette", folder / palette_file) == 0
        np.testing.assert_array_equal(plte(out), saved)
        assert_nearest(small_china, read_png(out)[3], saved)
        # Each colour takes its nearest rounded entry, where the fit took its nearest centre before the rounding:
        # the same palette, a few pixels nearer.
        error = [np.mean((small_china.astype(float) - read_png(path)[3]) ** 2) for path in (out, folder / "a.png")]
        assert error[0] <= error[1]


def test_one_palette_for_a_batch_whole_and_in_order(run_job, capsys, tmp_path, small_china):
    palette = np.array([[250, 250, 250], [10, 10, 10], [200, 40, 40], [40, 200, 40], [40, 40, 200], [128, 128, 0]],
                       dtype=np.uint8)
    (tmp_path / "brand.json").write_text(json.dumps({"format": "mixlib-palette", "colours": palette.tolist()}))
    images = {"a": small_china, "b": small_china[::-1], "c": np.full((40, 40, 3), 12, np.uint8)}
    for name, image in images.items():
        save_png(tmp_path / "in" / f"{name}.png", image)
    assert run_job(tmp_path / "in", "--palette", tmp_path / "brand.json", "--out",
                   tmp_path / "out" / "{relpath}.png") == 0, capsys.readouterr().err
    for name, image in images.items():
        out = tmp_path / "out" / f"{name}.png"
        np.testing.assert_array_equal(plte(out), palette)  # every entry, used or not, in the file's order
        assert_nearest(image, read_png(out)[3], palette)


def test_palette_from_an_image_of_few_colours(run_job, tmp_path, small_china_png, small_china):
    swatches = np.repeat(np.array([[[0, 0, 0], [255, 255, 255], [120, 90, 60]]], dtype=np.uint8), 5, axis=0)
    save_png(tmp_path / "three.png", swatches)
    assert run_job(small_china_png, "--out", tmp_path / "o.png", "--palette", tmp_path / "three.png") == 0
    used = np.unique(plte(tmp_path / "o.png"), axis=0)
    np.testing.assert_array_equal(used, np.unique(swatches.reshape(-1, 3), axis=0))
    assert_nearest(small_china, read_png(tmp_path / "o.png")[3], used)


@pytest.mark.parametrize("setup, flags, message", [
    ("photo", ("--palette", "{tmp}/photo.png"), "distinct colours; a palette holds at most 256"),
    ("bad-json", ("--palette", "{tmp}/bad.json"), "is not a mixlib palette"),
    ("none", ("--palette", "{tmp}/missing.json"), "does not exist"),
    ("good", ("--palette", "{tmp}/good.json", "--target-psnr", "30"), "leave out --target-psnr"),
    ("good", ("--palette", "{tmp}/good.json", "--fixed-colours", "#ffffff"), "leave out --fixed-colours"),
    ("alpha", ("--palette", "{tmp}/alpha.json"), "not opaque"),
    ("good", ("--palette-out", "{tmp}/p.txt"), ".json"),
])
def test_bad_palettes_exit_2(run_job, capsys, tmp_path, small_china_png, small_china, setup, flags, message):
    save_png(tmp_path / "photo.png", small_china)
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "good.json").write_text(json.dumps({"format": "mixlib-palette", "colours": [[1, 2, 3]]}))
    (tmp_path / "alpha.json").write_text(json.dumps({"format": "mixlib-palette", "colours": [[1, 2, 3, 100]]}))
    flags = [flag.format(tmp=tmp_path) for flag in flags]
    assert run_job(small_china_png, "--out", tmp_path / "x.png", *flags) == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "x.png").exists()


def test_palette_out_is_for_one_image(run_job, capsys, tmp_path, small_china):
    save_png(tmp_path / "in" / "a.png", small_china)
    save_png(tmp_path / "in" / "b.png", small_china[::-1])
    assert run_job(tmp_path / "in", "--out", tmp_path / "out" / "{relpath}.png", "--palette-out",
                   tmp_path / "p.json") == 2
    assert "--palette-out is for a single image" in capsys.readouterr().err
