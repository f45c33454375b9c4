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
    ("good", ("--palette-out", "{tmp}/p.txt"), ".json"),
])
def test_bad_palettes_exit_2(run_job, capsys, tmp_path, small_china_png, small_china, setup, flags, message):
    save_png(tmp_path / "photo.png", small_china)
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "good.json").write_text(json.dumps({"format": "mixlib-palette", "colours": [[1, 2, 3]]}))
    flags = [flag.format(tmp=tmp_path) for flag in flags]
    assert run_job(small_china_png, "--out", tmp_path / "x.png", *flags) == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "x.png").exists()


def test_palette_out_is_for_one_image_or_a_shared_palette(run_job, capsys, tmp_path, small_china):
    save_png(tmp_path / "in" / "a.png", small_china)
    save_png(tmp_path / "in" / "b.png", small_china[::-1])
    assert run_job(tmp_path / "in", "--out", tmp_path / "out" / "{relpath}.png", "--palette-out",
                   tmp_path / "p.json") == 2
    assert "--palette-out is for a single image" in capsys.readouterr().err


def test_rgba_palette_on_an_rgb_image(run_job, tmp_path, small_china_png, small_china):
    """An RGB image takes the nearest opaque entry of an RGBA palette; the output carries the palette whole."""
    palette = np.array([[0, 0, 0, 0], [250, 250, 250, 255], [20, 20, 20, 255], [120, 100, 80, 255]], np.uint8)
    (tmp_path / "rgba.json").write_text(json.dumps({"format": "mixlib-palette", "colours": palette.tolist()}))
    assert run_job(small_china_png, "--out", tmp_path / "o.png", "--palette", tmp_path / "rgba.json") == 0
    labels, written, _, pixels = read_png(tmp_path / "o.png")
    np.testing.assert_array_equal(written, palette)
    assert (written[labels][..., 3] == 255).all()
    assert_nearest(small_china, pixels[..., :3], palette[1:, :3])


def test_shared_palette_is_the_fit_of_all_images_together(run_job, capsys, tmp_path, small_china):
    images = {"a": small_china, "b": small_china[::-1, :, ::-1], "c": small_china[:40] // 2}
    for name, image in images.items():
        save_png(tmp_path / "in" / f"{name}.png", image)
    out = tmp_path / "out" / "{relpath}.png"
    assert run_job(tmp_path / "in", "--shared-palette", "--k", "12", "--out", out, "--palette-out",
                   tmp_path / "shared.json", "--report", tmp_path / "r.jsonl") == 0, capsys.readouterr().err
    shared = np.array(json.loads((tmp_path / "shared.json").read_text())["colours"], dtype=np.uint8)
    # The fit of every pixel of the three images as one image: the same palette (the merged histogram is exact).
    from mixlib import quantise

    together = np.vstack([image.reshape(-1, 1, 3) for image in images.values()])
    np.testing.assert_array_equal(shared, quantise(together, 12).palette)
    for name, image in images.items():
        path = tmp_path / "out" / f"{name}.png"
        np.testing.assert_array_equal(plte(path), shared)
        assert_nearest(image, read_png(path)[3], shared)
    first = (tmp_path / "out" / "b.png").read_bytes()
    (tmp_path / "out" / "b.png").unlink()
    assert run_job(tmp_path / "in", "--shared-palette", "--k", "12", "--out", out, "--resume") == 0
    assert (tmp_path / "out" / "b.png").read_bytes() == first  # a resumed batch fits the same palette


def test_shared_palette_over_rgb_and_rgba_images(run_job, capsys, tmp_path, small_china):
    rgba = np.dstack([small_china, np.where(small_china[..., 1] > 120, 255, 0).astype(np.uint8)])
    save_png(tmp_path / "in" / "rgb.png", small_china)
    save_png(tmp_path / "in" / "rgba.png", rgba)
    assert run_job(tmp_path / "in", "--shared-palette", "--k", "8", "--out", tmp_path / "out" / "{relpath}.png") == 0
    rgb_labels, rgb_palette, _, rgb_pixels = read_png(tmp_path / "out" / "rgb.png")
    rgba_labels, rgba_palette, _, _ = read_png(tmp_path / "out" / "rgba.png")
    np.testing.assert_array_equal(rgb_palette, rgba_palette)  # one palette, with its transparent entry
    assert (rgb_palette[rgb_labels][..., 3] == 255).all()  # the RGB image takes opaque entries only
    assert (rgba_palette[rgba_labels][..., 3][rgba[..., 3] == 0] == 0).all()


@pytest.mark.parametrize("flags, message", [
    (("--shared-palette", "--palette", "{tmp}/good.json"), "give one of them"),
])
def test_shared_palette_bad_options(run_job, capsys, tmp_path, small_china, flags, message):
    save_png(tmp_path / "in" / "a.png", small_china)
    save_png(tmp_path / "in" / "b.png", small_china[::-1])
    (tmp_path / "good.json").write_text(json.dumps({"format": "mixlib-palette", "colours": [[1, 2, 3]]}))
    flags = [flag.format(tmp=tmp_path) for flag in flags]
    assert run_job(tmp_path / "in", "--out", tmp_path / "out" / "{relpath}.png", *flags) == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]
    assert run_job(tmp_path / "in" / "a.png", "--out", tmp_path / "x.png", "--shared-palette") == 2
    assert "for several inputs" in capsys.readouterr().err
