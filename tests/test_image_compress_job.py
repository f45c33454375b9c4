"""Job-level tests of ``python -m jobs.compress``.

Most runs call ``jobs.compress.main`` in this process against the session cluster (``run_job``); a few
end-to-end runs start the command as a subprocess. Outputs go to ``tmp_path``; images are made here.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, downscale, read_png, save_png
from PIL import Image

import mixlib
from mixlib.core.checkpoint import BlockCheckpoint

# ------------------------------------------------------------------------------------------ helpers


def assert_usage_error(status, err, folder=None, leftovers=()):
    """Exit status 2, exactly one non-empty stderr line starting with 'error:', nothing left behind."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("error:"), err
    assert len(lines[0]) > len("error: ")
    assert "Traceback" not in err
    if folder is not None:
        folder = Path(folder)
        present = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
        assert present == sorted(leftovers), present
    return lines[0]


def tree_bytes(path):
    """Every file below ``path`` (or the file itself): relative path -> bytes."""
    path = Path(path)
    if path.is_file():
        return {".": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def rgb_of_png(path):
    return read_png(path)[3]


def find_subimage(big, small):
    """Top-left (row, col) where ``small`` occurs exactly inside ``big``, or None."""
    h, w = small.shape[:2]
    rows, cols = np.nonzero(np.all(big[:big.shape[0] - h + 1, :big.shape[1] - w + 1] == small[0, 0], axis=-1))
    for r, c in zip(rows, cols):
        if np.array_equal(big[r, c:c + w], small[0]) and np.array_equal(big[r:r + h, c:c + w], small):
            return int(r), int(c)
    return None


def write_zarr_image(path, pixels, chunks):
    import zarr

    array = zarr.create_array(store=str(path), shape=pixels.shape, chunks=chunks, dtype=pixels.dtype)
    array[...] = pixels
    return path


def write_tiled_tiff(path, pixels, tile=(256, 256)):
    import tifffile

    tifffile.imwrite(path, pixels, tile=tile, photometric="rgb")
    return path



# ------------------------------------------------------------------------------------- bad inputs

def _valid_png(tmp_path, small_china):
    return save_png(tmp_path / "inputs" / "ok.png", small_china)


def _half_of(tmp_path, name, data):
    path = tmp_path / "inputs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[:len(data) // 2])
    return path


def _encoded(small_china, fmt):
    import io

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(small_china)).save(buffer, format=fmt)
    return buffer.getvalue()


def _config(tmp_path, text):
    path = tmp_path / "configs" / "bad.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _tiled_tiff_bytes(tmp_path, small_china):
    (tmp_path / "inputs").mkdir(parents=True, exist_ok=True)
    path = write_tiled_tiff(tmp_path / "inputs" / "whole.tif", np.asarray(small_china), tile=(32, 32))
    data = path.read_bytes()
    path.unlink()
    return data


# Each case: (id, build(tmp_path, small_china, outdir, free_port) -> (argv, words the message must contain)).
BAD_INPUTS = [
    ("missing-file", lambda t, img, out, port: (
        [t / "inputs" / "nope.png", "--out", out / "r.png"], ["nope.png", "does not exist"])),
    ("zero-byte-file", lambda t, img, out, port: (
        [_half_of(t, "empty.png", b""), "--out", out / "r.png"], ["empty"])),
    ("truncated-jpeg", lambda t, img, out, port: (
        [_half_of(t, "half.jpg", _encoded(img, "JPEG")), "--out", out / "r.png"], ["half.jpg", "truncated"])),
    ("truncated-png", lambda t, img, out, port: (
        [_half_of(t, "half.png", _encoded(img, "PNG")), "--out", out / "r.png"], ["half.png", "truncated"])),
    ("text-named-png", lambda t, img, out, port: (
        [_half_of(t, "text.png", b"this is not an image, only text\n" * 8), "--out", out / "r.png"], ["text.png"])),
    ("truncated-tiled-tiff", lambda t, img, out, port: (
        [_half_of(t, "half.tif", _tiled_tiff_bytes(t, img)), "--out", out / "r.png"], ["half.tif", "truncated"])),
    ("k-zero", lambda t, img, out, port: (
        [_valid_png(t, img), "--k", "0", "--out", out / "r.png"], ["--k"])),
    ("k-too-large", lambda t, img, out, port: (
        [_valid_png(t, img), "--k", "65537", "--out", out / "r.tif"], ["--k", "65536"])),
    ("k-300-png", lambda t, img, out, port: (
        [_valid_png(t, img), "--k", "300", "--out", out / "r.png"], ["300"])),
    ("unreachable-scheduler", lambda t, img, out, port: (
        [_valid_png(t, img), "--out", out / "r.png", "--scheduler", f"tcp://127.0.0.1:{port}",
         "--connect-timeout", "2"], [f"127.0.0.1:{port}"])),
    ("dashboard-address-as-scheduler", lambda t, img, out, port: (
        [_valid_png(t, img), "--out", out / "r.png", "--scheduler", "http://127.0.0.1:8787"],
        ["tcp://", "dashboard port"])),
    ("unknown-scheduler-scheme", lambda t, img, out, port: (
        [_valid_png(t, img), "--out", out / "r.png", "--scheduler", "ftp://127.0.0.1:8786"], ["ftp://"])),
    ("config-unknown-key", lambda t, img, out, port: (
        [_valid_png(t, img), "--out", out / "r.png", "--config", _config(t, "k = 4\ncolours = 8\n")], ["colours"])),
    ("config-wrong-type", lambda t, img, out, port: (
        [_valid_png(t, img), "--out", out / "r.png", "--config", _config(t, 'k = "many"\n')], ["many"])),
    ("config-not-toml", lambda t, img, out, port: (
        [_valid_png(t, img), "--out", out / "r.png", "--config", _config(t, "k: 4\n[[[\n")], ["TOML"])),
    ("config-missing", lambda t, img, out, port: (
        [_valid_png(t, img), "--out", out / "r.png", "--config", t / "configs" / "missing.toml"], ["missing.toml"])),
    ("unknown-flag", lambda t, img, out, port: (
        [_valid_png(t, img), "--out", out / "r.png", "--colours", "8"], ["--colours"])),
    ("bad-method", lambda t, img, out, port: (
        [_valid_png(t, img), "--out", out / "r.png", "--method", "kmedoids"], ["kmedoids"])),
    ("max-pixels", lambda t, img, out, port: (
        [save_png(t / "inputs" / "big.png", np.zeros((100, 100, 3), np.uint8)), "--out", out / "r.png",
         "--max-pixels", "5000"], ["--max-pixels"])),
    ("unknown-output-format", lambda t, img, out, port: (
        [_valid_png(t, img), "--out", out / "r.jpg"], ["r.jpg"])),
    ("tile-size-not-multiple-of-16", lambda t, img, out, port: (
        [_valid_png(t, img), "--out", out / "r.tif", "--tile-size", "40"], ["--tile-size"])),
    ("bad-placeholder", lambda t, img, out, port: (
        [_valid_png(t, img), "--out", str(out / "{colour}.png")], ["placeholder"])),
    ("same-out-and-compare", lambda t, img, out, port: (
        [_valid_png(t, img), "--out", out / "r.png", "--compare", out / "r.png"], ["different"])),
    ("zarr-wrong-dtype", lambda t, img, out, port: (
        [write_zarr_image(t / "inputs" / "float.zarr", np.zeros((8, 8, 3), np.float32), (8, 8, 3)),
         "--out", out / "r.png"], ["float.zarr"])),
    ("input-given-twice", lambda t, img, out, port: (
        [_valid_png(t, img), "--input", _valid_png(t, img), "--out", out / "r.png"], [])),
]


@pytest.mark.parametrize("build", [case[1] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_is_one_line_and_exit_status_2(run_job, capsys, tmp_path, small_china, outdir, free_port, build):
    argv, words = build(tmp_path, small_china, outdir, free_port)
    status = run_job(*argv)
    line = assert_usage_error(status, capsys.readouterr().err, outdir)
    for word in words:
        assert word in line


def test_existing_output_is_kept_without_overwrite(run_job, capsys, small_china_png, outdir):
    out = outdir / "r.png"
    out.write_bytes(b"precious, not an image")
    status = run_job(small_china_png, "--out", out)
    line = assert_usage_error(status, capsys.readouterr().err, outdir, leftovers=["r.png"])
    assert "--overwrite" in line
    assert out.read_bytes() == b"precious, not an image"


@pytest.mark.parametrize("where", ["under-a-file", "proc"])
def test_unwritable_output_folder(run_job, capsys, tmp_path, small_china_png, where):
    before = sorted(p.name for p in tmp_path.iterdir())
    if where == "under-a-file":
        regular = tmp_path / "file.txt"
        regular.write_text("a regular file, not a folder\n")
        before = sorted(p.name for p in tmp_path.iterdir())
        out = regular / "out.png"
    else:
        out = Path("/proc/out.png")
    status = run_job(small_china_png, "--out", out)
    line = assert_usage_error(status, capsys.readouterr().err)
    assert str(out) in line
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    if where == "under-a-file":
        assert (tmp_path / "file.txt").read_text() == "a regular file, not a folder\n"
    else:
        assert not [name for name in os.listdir("/proc") if name.startswith(".out")]


# --------------------------------------------------------------------------------- determinism

@pytest.mark.parametrize("suffix", [".png", ".tif", ".zarr"])
def test_output_bytes_do_not_depend_on_chunks_or_workers(run_job, capsys, tmp_path, small_china_png,
                                                          one_worker_address, suffix):
    outputs = []
    runs = [("64", None), ("100", None), ("4096", None), ("100", one_worker_address)]
    for i, (chunk_size, scheduler) in enumerate(runs):
        out = tmp_path / f"run{i}" / f"out{suffix}"
        argv = [small_china_png, "--out", out, "--k", "8", "--seed", "3", "--chunk-size", chunk_size,
                "--tile-size", "48"]
        if scheduler:
            argv += ["--scheduler", scheduler]
        assert run_job(*argv) == 0, capsys.readouterr().err
        outputs.append(tree_bytes(out))
    assert outputs[0] and all(outputs[0].values())
    for other in outputs[1:]:
        assert other.keys() == outputs[0].keys()
        for name in other:
            assert other[name] == outputs[0][name], name


def test_minibatch_output_does_not_depend_on_chunks_or_workers(run_job, capsys, tmp_path, small_china_png,
                                                               one_worker_address):
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    common = ["--k", "8", "--method", "minibatch", "--seed", "5", "--batch-size", "256"]
    assert run_job(small_china_png, "--out", first, "--chunk-size", "64", *common) == 0
    assert run_job(small_china_png, "--out", second, "--chunk-size", "4096", "--scheduler", one_worker_address,
                   *common) == 0
    assert first.read_bytes() == second.read_bytes()


# ---------------------------------------------------------------------------------------- RGBA

def rgba_test_image():
    rng = np.random.default_rng(21)
    height, width = 64, 96
    rows, cols = np.mgrid[0:height, 0:width]
    pixels = np.empty((height, width, 4), np.uint8)
    pixels[..., 0] = cols * 255 // (width - 1)
    pixels[..., 1] = rows * 255 // (height - 1)
    pixels[..., 2] = 128
    pixels[..., 3] = 255
    pixels[:, :24, :3] = rng.integers(0, 256, size=(height, 24, 3))  # colours that vary under alpha 0
    pixels[:, :24, 3] = 0
    pixels[:16, 24:48, 3] = rng.integers(1, 255, size=(16, 24))  # semi-transparent
    pixels[40:, 80:, 3] = 1  # barely visible, must stay visible
    return pixels


def test_rgba_png_round_trip(run_job, capsys, tmp_path):
    pixels = rgba_test_image()
    source = save_png(tmp_path / "rgba.png", pixels)
    out = tmp_path / "rgba-k8.png"

    assert run_job(source, "--out", out, "--k", "8") == 0, capsys.readouterr().err

    labels, palette, mode, rgba = read_png(out)
    assert mode == "P"
    assert rgba.shape == pixels.shape
    transparent = pixels[..., 3] == 0
    assert (rgba[transparent, 3] == 0).all()
    assert len(np.unique(labels[transparent])) == 1
    assert (rgba[~transparent, 3] > 0).all()
    assert len(palette) <= 8
    assert len(np.unique(palette, axis=0)) == len(palette), palette
    # Exactly one palette entry is fully transparent.
    assert (palette[:, 3] == 0).sum() == 1

    # The TIFF output stores RGBA pixels and the Zarr output an RGBA palette: the same image as the PNG.
    import tifffile
    import zarr

    tif, store = tmp_path / "rgba-k8.tif", tmp_path / "rgba-k8.zarr"
    assert run_job(source, "--out", tif, "--k", "8", "--tile-size", "32") == 0, capsys.readouterr().err
    assert run_job(source, "--out", store, "--k", "8") == 0, capsys.readouterr().err
    np.testing.assert_array_equal(tifffile.imread(tif), rgba)
    group = zarr.open_group(str(store), mode="r")
    assert group["palette"].shape[1] == 4
    np.testing.assert_array_equal(group["palette"][...][group["labels"][...]], rgba)


# ------------------------------------------------------------------------------ Zarr and TIFF

@pytest.fixture
def tiled_china(small_china):
    """small china tiled 3x3: (321, 480, 3)."""
    return np.tile(np.asarray(small_china), (3, 3, 1))


def test_png_zarr_and_tiff_inputs_and_outputs_agree(run_job, capsys, tmp_path, tiled_china):
    import tifffile
    import zarr

    height, width, _ = tiled_china.shape
    inputs = {
        "png": save_png(tmp_path / "in" / "img.png", tiled_china),
        "zarr": write_zarr_image(tmp_path / "in" / "img.zarr", tiled_china, (200, 300, 3)),
        "tiff": write_tiled_tiff(tmp_path / "in" / "img.tif", tiled_china),
        "striped-tiff": tmp_path / "in" / "striped.tif",
    }
    tifffile.imwrite(inputs["striped-tiff"], tiled_china, photometric="rgb", rowsperstrip=50)
    assert tifffile.TiffFile(inputs["tiff"]).pages.first.is_tiled
    results = {}
    for kind, path in inputs.items():
        out = tmp_path / "out" / f"{kind}.png"
        assert run_job(path, "--out", out, "--k", "8", "--chunk-size", "200") == 0, capsys.readouterr().err
        results[kind] = read_png(out)
    labels, palette, mode, rgb = results["png"]
    assert mode == "P" and labels.shape == (height, width) and len(palette) == 8
    for kind in ("zarr", "tiff", "striped-tiff"):
        np.testing.assert_array_equal(results[kind][0], labels)
        np.testing.assert_array_equal(results[kind][1], palette)

    zarr_out = tmp_path / "out" / "from-zarr.zarr"
    assert run_job(inputs["zarr"], "--out", zarr_out, "--k", "8", "--tile-size", "128") == 0
    group = zarr.open_group(str(zarr_out), mode="r")
    assert group["labels"].shape == (height, width)
    assert group["palette"].shape == (8, 3)
    assert group["palette"].dtype == np.uint8
    z_labels, z_palette = group["labels"][...], group["palette"][...]
    np.testing.assert_array_equal(z_palette[z_labels], rgb)

    tiff_out = tmp_path / "out" / "from-tiff.tif"
    assert run_job(inputs["tiff"], "--out", tiff_out, "--k", "8", "--tile-size", "128") == 0
    with tifffile.TiffFile(tiff_out) as tif:
        page = tif.pages.first
        assert page.is_tiled
        assert (page.tilelength, page.tilewidth) == (128, 128)
        assert page.photometric == tifffile.PHOTOMETRIC.PALETTE
        t_labels = page.asarray()
        colormap = page.colormap
    assert t_labels.shape == (height, width)
    assert (colormap % 257 == 0).all()
    np.testing.assert_array_equal((colormap // 257).T[t_labels].astype(np.uint8), rgb)


# ------------------------------------------------------------------------- few colours, tiny images

def test_fewer_colours_than_k(run_job, capsys, tmp_path):
    colours = np.array([[255, 0, 0], [0, 128, 0], [0, 0, 255], [250, 250, 250], [3, 2, 1]], np.uint8)
    pixels = colours[np.random.default_rng(22).integers(0, 5, size=(40, 50))]
    source = save_png(tmp_path / "five.png", pixels)
    out, report = tmp_path / "five-k16.png", tmp_path / "five.json"

    assert run_job(source, "--out", out, "--k", "16", "--report", report) == 0, capsys.readouterr().err

    labels, palette, mode, rgb = read_png(out)
    assert mode == "P"
    assert len(palette) == 5
    assert {tuple(c) for c in palette} == {tuple(c) for c in colours}
    np.testing.assert_array_equal(rgb, pixels)
    data = json.loads(report.read_text())
    assert data["k_requested"] == 16
    assert data["k_effective"] == 5
    assert data["mse"] == 0


@pytest.mark.parametrize("shape", [(30, 20), (1, 1)], ids=["one-colour", "one-pixel"])
def test_one_colour_and_one_pixel_images(run_job, capsys, tmp_path, shape):
    pixels = np.empty(shape + (3,), np.uint8)
    pixels[...] = [12, 200, 99]
    source = save_png(tmp_path / "flat.png", pixels)
    out = tmp_path / "flat-out.png"

    assert run_job(source, "--out", out, "--k", "16") == 0, capsys.readouterr().err

    labels, palette, mode, rgb = read_png(out)
    assert mode == "P"
    np.testing.assert_array_equal(palette, [[12, 200, 99]])
    np.testing.assert_array_equal(rgb, pixels)


def test_k_1_gives_the_mean_colour(run_job, capsys, tmp_path, small_china_png, small_china):
    out = tmp_path / "k1.png"
    assert run_job(small_china_png, "--out", out, "--k", "1") == 0, capsys.readouterr().err
    labels, palette, mode, rgb = read_png(out)
    mean = np.asarray(small_china).reshape(-1, 3).astype(np.float64).mean(axis=0)
    np.testing.assert_array_equal(palette, [np.rint(mean)])
    assert (labels == 0).all()


def test_grey_input_becomes_rgb(run_job, capsys, tmp_path):
    levels = np.array([0, 40, 90, 200, 255], np.uint8)
    grey = levels[np.random.default_rng(23).integers(0, 5, size=(30, 40))]
    source = tmp_path / "grey.png"
    Image.fromarray(grey, mode="L").save(source)
    out = tmp_path / "grey-out.png"
    assert run_job(source, "--out", out, "--k", "8") == 0, capsys.readouterr().err
    labels, palette, mode, rgb = read_png(out)
    assert len(palette) == 5
    np.testing.assert_array_equal(rgb, np.repeat(grey[..., None], 3, axis=2))


def test_more_than_256_colours_in_tiff_and_zarr(run_job, capsys, tmp_path, small_china_png, small_china):
    import tifffile
    import zarr

    tif, store, report = tmp_path / "k300.tif", tmp_path / "k300.zarr", tmp_path / "k300.json"
    common = ["--k", "300", "--max-iter", "30", "--seed", "2"]
    assert run_job(small_china_png, "--out", tif, "--report", report, *common) == 0, capsys.readouterr().err
    assert run_job(small_china_png, "--out", store, *common) == 0, capsys.readouterr().err

    group = zarr.open_group(str(store), mode="r")
    labels, palette = group["labels"][...], group["palette"][...]
    assert labels.dtype == np.uint16
    assert 256 < len(palette) <= 300
    assert len(np.unique(palette, axis=0)) == len(palette)
    assert labels.max() == len(palette) - 1
    with tifffile.TiffFile(tif) as t:  # above 256 colours: the pixels' colours, which every reader takes
        page = t.pages.first
        assert page.photometric == tifffile.PHOTOMETRIC.RGB and page.is_tiled
        np.testing.assert_array_equal(page.asarray(), palette[labels])
    from PIL import Image

    with Image.open(tif) as im:
        np.testing.assert_array_equal(np.asarray(im.convert("RGB")), palette[labels])
    assert run_job(tif, "--out", tmp_path / "again.png", "--k", "8") == 0, capsys.readouterr().err  # reads back
    data = json.loads(report.read_text())
    assert data["k_effective"] == len(palette)
    error = (np.asarray(small_china).astype(np.float64) - palette[labels]) ** 2
    assert data["mse"] == pytest.approx(error.mean(), rel=1e-9)


@pytest.mark.parametrize("failure,status,message", [
    (RuntimeError("disk on fire"), 1, "error: unexpected failure: RuntimeError: disk on fire"),
    (KeyboardInterrupt(), 130, "error: interrupted"),
], ids=["unexpected", "interrupted"])
def test_failure_after_writing_leaves_nothing_behind(run_job, capsys, monkeypatch, small_china_png, outdir,
                                                     failure, status, message):
    import mixlib.image.compress

    def fail(*args, **kwargs):
        raise failure

    # The side-by-side image is made after the output was written under its temporary name.
    monkeypatch.setattr(mixlib.image.compress, "side_by_side", fail)
    result = run_job(small_china_png, "--out", outdir / "r.png", "--compare", outdir / "c.png",
                     "--report", outdir / "r.json", "--log-level", "warning")
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert result == status, err
    assert len(lines) == 1 and lines[0].startswith(message), err
    assert "Traceback" not in err
    assert sorted(p.name for p in outdir.iterdir()) == []


# --------------------------------------------------------------------------------- PNG and report

def test_palette_png_is_smaller_than_rgb_png_and_has_k_colours(run_job, capsys, tmp_path, china):
    source = save_png(tmp_path / "half.png", downscale(china, (320, 213)))
    out = tmp_path / "half-k16.png"
    assert run_job(source, "--out", out, "--k", "16") == 0, capsys.readouterr().err

    labels, palette, mode, rgb = read_png(out)
    assert mode == "P"
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) == 16
    assert len(palette) == 16
    as_rgb = save_png(tmp_path / "same-as-rgb.png", palette[labels])
    np.testing.assert_array_equal(rgb_of_png(as_rgb), rgb)
    assert out.stat().st_size < as_rgb.stat().st_size


def test_report_contents(run_job, capsys, tmp_path, small_china_png, small_china):
    out, report = tmp_path / "r.png", tmp_path / "r.json"
    assert run_job(small_china_png, "--out", out, "--report", report, "--k", "8", "--seed", "5",
                   "--tol", "0") == 0, capsys.readouterr().err
    data = json.loads(report.read_text())

    expected_keys = {"method", "k_requested", "k_effective", "iterations", "converged", "inertia", "mse",
                     "psnr_db", "seconds", "input_bytes", "output_bytes", "palette", "seed", "versions"}
    assert expected_keys <= data.keys()
    labels, palette, mode, rgb = read_png(out)
    assert data["method"] == "lloyd"
    assert data["k_requested"] == 8
    assert data["k_effective"] == len(palette) == len(np.unique(rgb.reshape(-1, 3), axis=0)) == 8
    assert data["palette"] == palette.tolist()
    assert data["seed"] == 5
    assert isinstance(data["iterations"], int) and data["iterations"] >= 1
    assert data["converged"] is True
    assert data["input_bytes"] == small_china_png.stat().st_size
    assert data["output_bytes"] == out.stat().st_size
    assert data["seconds"] and all(v >= 0 for v in data["seconds"].values())
    assert data["versions"]["mixlib"] == mixlib.__version__
    assert data["versions"]["numpy"] == np.__version__

    original = np.asarray(small_china).astype(np.float64)
    squared = ((original - rgb.astype(np.float64)) ** 2)
    assert data["mse"] == pytest.approx(squared.mean(), rel=1e-9)
    assert data["psnr_db"] == pytest.approx(10 * math.log10(255.0 ** 2 / data["mse"]), rel=1e-12)
    # Converged with tol=0, every centre is the mean of its colours, so the error of the rounded palette is
    # the inertia plus the rounding (at most 3 x 0.5^2 per pixel).
    total = squared.sum()
    pixels = original.shape[0] * original.shape[1]
    assert data["inertia"] <= total * (1 + 1e-12)
    assert total <= data["inertia"] + 0.75 * pixels


def test_compare_image_holds_both_images(run_job, capsys, tmp_path, small_china_png, small_china):
    out, compare = tmp_path / "c.png", tmp_path / "side.png"
    assert run_job(small_china_png, "--out", out, "--compare", compare, "--k", "8") == 0, capsys.readouterr().err

    height, width, _ = small_china.shape
    with Image.open(compare) as im:
        assert im.format == "PNG"
        side = np.asarray(im.convert("RGB"))
    assert side.shape[1] >= 2 * min(width, 1024)
    assert side.shape[0] >= height
    at_original = find_subimage(side, np.asarray(small_china))
    at_compressed = find_subimage(side, rgb_of_png(out))
    assert at_original is not None and at_compressed is not None
    assert at_original[1] + width <= at_compressed[1]


def test_flag_beats_config_file(run_job, capsys, tmp_path, small_china_png):
    config = tmp_path / "four.toml"
    config.write_text("k = 4\nseed = 1\n")
    from_file, from_flag = tmp_path / "file.png", tmp_path / "flag.png"

    assert run_job(small_china_png, "--config", config, "--out", from_file) == 0, capsys.readouterr().err
    assert run_job(small_china_png, "--config", config, "--out", from_flag, "--k", "6") == 0

    assert len(read_png(from_file)[1]) == 4
    assert len(np.unique(rgb_of_png(from_file).reshape(-1, 3), axis=0)) == 4
    assert len(read_png(from_flag)[1]) == 6
    assert len(np.unique(rgb_of_png(from_flag).reshape(-1, 3), axis=0)) == 6


@pytest.mark.parametrize("suffix", [".png", ".zarr"])
def test_overwrite_replaces_existing_output(run_job, capsys, tmp_path, small_china_png, suffix):
    import zarr

    folder = tmp_path / "out"
    out = folder / f"r{suffix}"
    if suffix == ".png":
        folder.mkdir()
        out.write_bytes(b"old")
    else:
        out.mkdir(parents=True)
        (out / "stale-file").write_text("old")
    assert run_job(small_china_png, "--out", out, "--k", "5", "--overwrite") == 0, capsys.readouterr().err

    assert sorted(p.name for p in folder.iterdir()) == [out.name]
    if suffix == ".png":
        assert len(read_png(out)[1]) == 5
    else:
        assert not (out / "stale-file").exists()
        assert zarr.open_group(str(out), mode="r")["palette"].shape == (5, 3)


def _listening(process):
    """(pid, ip, port) of the TCP sockets listened on by ``process`` and its children."""
    import psutil

    found = set()
    for proc in [process] + process.children(recursive=True):
        try:
            found |= {(proc.pid, c.laddr.ip, c.laddr.port) for c in proc.net_connections(kind="inet")
                      if c.status == psutil.CONN_LISTEN}
        except psutil.Error:
            pass
    return found


@pytest.mark.parametrize("processes", [True, False], ids=["processes", "threads"])
def test_embedded_cluster_listens_on_loopback_only(processes):
    """README: the embedded cluster is bound to 127.0.0.1, its dashboard too, and the link printed at start works."""
    import psutil

    from mixlib.core.cluster import connect
    from mixlib.image.compress import CompressSettings

    settings = CompressSettings(processes=processes, workers=2, dashboard_address="127.0.0.1:0")
    me = psutil.Process()
    before = _listening(me)
    with connect(settings, address="") as client:
        assert client.submit(sum, [1, 2, 3]).result() == 6
        opened = _listening(me) - before
        link = client.dashboard_link
    assert opened
    assert {ip for _, ip, _ in opened} <= {"127.0.0.1", "::1"}, opened
    assert link.startswith("http://127.0.0.1:"), link
    port = int(link.split(":")[2].split("/")[0])
    assert port in {p for _, _, p in opened}


def test_threaded_embedded_cluster_gives_the_same_output(run_job, capsys, tmp_path, small_china_png):
    on_session, threaded = tmp_path / "session.png", tmp_path / "threaded.png"
    assert run_job(small_china_png, "--out", on_session, "--k", "8") == 0, capsys.readouterr().err
    assert run_job(small_china_png, "--out", threaded, "--k", "8", "--scheduler", "", "--no-processes",
                   "--dashboard-address", "127.0.0.1:0") == 0, capsys.readouterr().err
    assert threaded.read_bytes() == on_session.read_bytes()


# ------------------------------------------------------------------------------- end to end

def test_default_command_end_to_end(cli, tmp_path):
    """``python -m jobs.compress`` with no arguments: the README's first command (a small photo: in this process,
    without a cluster, and without loading distributed)."""
    done = cli(cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "outputs" / "compress" / "china-k16.png"
    assert out.is_file()
    assert "without a cluster" in done.stderr and "http://127.0.0.1:" not in done.stderr
    assert "Traceback" not in done.stderr
    labels, palette, mode, rgb = read_png(out)
    assert mode == "P" and labels.shape == (427, 640) and len(palette) == 16
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("job,args", [("compress", ["--out", "x.png"]), ("compress", ["--out", "x.tif"]),
                                      ("sample", ["--model", "m.json", "--shape", "100x120", "--out", "x.png"])])
def test_a_small_job_does_not_load_distributed(tmp_path, job, args):
    """A job that runs in this process pays for no cluster: distributed (0.3 s to import) is never loaded."""
    from mixlib.fit.gmm import Mixture, save_mixture

    save_mixture(tmp_path / "m.json", Mixture(np.array([1.0]), np.array([[90.0, 120, 60]]), np.eye(3)[None] * 50), {})
    script = (f"import sys, jobs.{job}; status = jobs.{job}.main({args!r}); "
              "print(status, 'distributed' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.stdout.split() == ["0", "False"], done.stderr
    assert (tmp_path / args[-1]).is_file()


def test_command_line_exit_statuses(cli, tmp_path, scheduler_address, small_china):
    """The real process: --help, a usage error, and a run on an existing scheduler named by the environment."""
    helped = cli("--help", cwd=tmp_path)
    assert helped.returncode == 0
    for flag in ("--k", "--method", "--scheduler", "--max-pixels", "--overwrite", "--config"):
        assert flag in helped.stdout

    bad = cli("--k", "0", cwd=tmp_path)
    assert_usage_error(bad.returncode, bad.stderr)
    assert not (tmp_path / "outputs").exists()

    source = save_png(tmp_path / "small.png", small_china)
    ok = cli(source, "--out", "small-k4.png", "--k", "4", cwd=tmp_path,
             env={"DASK_SCHEDULER_ADDRESS": scheduler_address})
    assert ok.returncode == 0, ok.stderr
    assert len(read_png(tmp_path / "small-k4.png")[1]) == 4


def test_performance_report(run_job, capsys, tmp_path, small_china_png):
    report = tmp_path / "perf.html"
    assert run_job(small_china_png, "--out", tmp_path / "o.png", "--performance-report", report) == 0, \
        capsys.readouterr().err
    html = report.read_text()
    assert "Dask Performance Report" in html
    for layer in ("colour-histogram", "palette-labels"):  # the fit of so few colours runs in the job's process
        assert layer in html, layer
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # An existing report is kept without --overwrite, before any work.
    assert run_job(small_china_png, "--out", tmp_path / "o2.png", "--performance-report", report) == 2
    assert "perf.html exists" in capsys.readouterr().err and not (tmp_path / "o2.png").exists()


def test_dashboard_link_template(run_job, capsys, tmp_path, small_china_png, scheduler_address):
    """For clusters behind a proxy the printed link follows a template (embedded and remote clusters)."""
    template = "https://proxy.example/dask/{port}/status"
    for where in (["--scheduler", "", "--dashboard-address", "127.0.0.1:0", "--local-pixels", 0],
                  ["--scheduler", scheduler_address]):
        out = tmp_path / f"o{len(where)}.png"
        assert run_job(small_china_png, "--out", out, "--dashboard-link", template, *where) == 0
        err = capsys.readouterr().err
        links = [line.split("dashboard: ")[1] for line in err.splitlines() if "dashboard: " in line]
        assert len(links) == 1 and links[0].startswith("https://proxy.example/dask/"), err
        assert links[0].removeprefix("https://proxy.example/dask/").removesuffix("/status").isdigit()


def _checkpointed_command(folder, out, *extra):
    """The compress command of the killed-histogram tests on ``folder``'s ``in.zarr``."""
    from conftest import cli_command

    return cli_command(folder / "in.zarr", "--k", 8, "--out", out, "--chunk-size", 256, "--config",
                       folder / "empty.toml", "--dashboard-address", "127.0.0.1:0", *extra)


@pytest.fixture(scope="module")
def uninterrupted_zarr_compress(tmp_path_factory):
    """The Zarr input of the killed-histogram tests and the PNG of an uninterrupted run of their job on it
    (``folder``: ``in.zarr``, ``whole.png``), made once for both ways of naming the checkpoint folder."""
    import zarr

    folder = tmp_path_factory.mktemp("uninterrupted")
    pixels = np.random.default_rng(2).integers(0, 64, (4096, 4096, 3), dtype=np.uint8) * 4
    zarr.create_array(str(folder / "in.zarr"), data=pixels, chunks=(256, 256, 3))
    (folder / "empty.toml").write_text("")
    whole, env = _checkpointed_command(folder, folder / "whole.png")
    assert subprocess.run(whole, env=env, cwd=REPO, capture_output=True, timeout=300).returncode == 0
    return folder


@pytest.mark.parametrize("named_by", ["path", "url"])
def test_killed_histogram_pass_resumes_from_its_checkpoint(tmp_path, named_by, uninterrupted_zarr_compress):
    """A compress of a Zarr image killed with SIGKILL during its histogram pass: --resume reads the block
    histograms it had saved, computes the rest, and writes the bytes of an uninterrupted run. The checkpoint folder
    may be named by an fsspec URL (file:// here, as s3:// would be on a cluster)."""
    import signal
    import time

    folder = uninterrupted_zarr_compress
    checkpoint = tmp_path / "checkpoint"
    checkpoint_dir = checkpoint.as_uri() if named_by == "url" else checkpoint

    def command(out, *extra):
        return _checkpointed_command(folder, out, *extra)

    def saved_blocks():  # 32 blocks of 2 x 4 chunks of 256 x 256
        try:
            return len(list(checkpoint.glob("r*-c*")))
        except FileNotFoundError:  # the job is emptying the folder it starts from
            return 0

    killed, env = command(tmp_path / "resumed.png", "--checkpoint-dir", checkpoint_dir)
    job = subprocess.Popen(killed, env=env, cwd=REPO, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while job.poll() is None and time.monotonic() < deadline and saved_blocks() < 6:
        time.sleep(0.01)
    job.send_signal(signal.SIGKILL)
    job.wait()
    saved = saved_blocks()
    assert job.returncode == -signal.SIGKILL and 6 <= saved < 32, saved
    assert not (tmp_path / "resumed.png").exists()

    resumed, env = command(tmp_path / "resumed.png", "--checkpoint-dir", checkpoint_dir, "--resume")
    done = subprocess.run(resumed, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"resuming the colour histogram: {saved} block histogram(s) saved" in done.stderr
    assert (tmp_path / "resumed.png").read_bytes() == (folder / "whole.png").read_bytes()
    assert not checkpoint.exists()  # a finished job leaves no checkpoint


def test_histogram_checkpoint_is_checked(run_job, capsys, tmp_path, small_china_png):
    import zarr

    status = run_job(small_china_png, "--out", tmp_path / "o.png", "--checkpoint-dir", tmp_path / "c")
    assert status == 2 and "needs a Zarr or TIFF input" in capsys.readouterr().err
    status = run_job(small_china_png, "--out", tmp_path / "o.png", "--resume")
    assert status == 2 and "--resume continues from --checkpoint-dir" in capsys.readouterr().err
    zarr.create_array(str(tmp_path / "a.zarr"), data=np.zeros((64, 64, 3), dtype=np.uint8), chunks=(32, 32, 3))
    BlockCheckpoint(tmp_path / "c", {"path": "elsewhere"}, "another input").start(resume=False)
    status = run_job(tmp_path / "a.zarr", "--out", tmp_path / "o.png", "--checkpoint-dir", tmp_path / "c", "--resume")
    assert status == 2 and "was made from another input, or other chunks" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()
