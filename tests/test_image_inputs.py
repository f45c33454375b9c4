"""Input images as a viewer shows them: 16-bit and floating-point samples scaled to 8-bit, EXIF and TIFF
orientation applied, animations and multi-page files inspected by their first frame and compressed whole, and
outputs that name a folder refused in one line.

Every image is made here (numpy, Pillow, tifffile, and a minimal PNG writer for the 16-bit colour PNGs that
Pillow cannot write). The expected 8-bit values are computed by hand with numpy; orientations are checked
against ``PIL.ImageOps.exif_transpose``.
"""

import json
import struct
import zlib

import numpy as np
import pytest
import tifffile
from conftest import read_png
from PIL import Image, ImageOps

from mixlib.core.errors import InputError
from mixlib.core.outputs import check_output
from mixlib.image.readers import PILLOW_MAX_PIXELS, ImageSource, inspect_image, orient
from mixlib.image.writers import OUTPUT_SUFFIXES

RNG = np.random.default_rng(11)


# ------------------------------------------------------------------------------------------ helpers

def _png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png16(path, samples, chunks=b"", size=None):
    """A 16-bit PNG of ``samples`` (H, W) grey, (H, W, 2) grey+alpha, (H, W, 3) RGB or (H, W, 4) RGBA uint16,
    unfiltered; ``size`` (W, H) overrides the header's size (an image that claims more pixels than it has)."""
    samples = np.asarray(samples, dtype=np.uint16)
    height, width = samples.shape[:2]
    colour_type = {2: 0, 3: {2: 4, 3: 2, 4: 6}.get(samples.shape[-1])}[min(samples.ndim, 3)]
    rows = samples.astype(">u2").reshape(height, -1).view(np.uint8)
    raw = b"".join(b"\0" + row.tobytes() for row in rows)
    width, height = size or (width, height)
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + chunks
                     + _png_chunk(b"IDAT", zlib.compress(raw)) + _png_chunk(b"IEND", b""))
    return path


def to8(values, top=65535):
    """The expected 8-bit value of integer samples: the nearest of 0..255 to v * 255 / top."""
    return np.round(np.asarray(values, dtype=np.float64) * 255 / top).astype(np.uint8)


def grey_to_rgb(grey):
    return np.repeat(grey[..., None], 3, axis=2)


def gradient16(height=24, width=300):
    """A horizontal 16-bit gradient, 0 to 65535, (H, W) uint16."""
    return np.tile(np.linspace(0, 65535, width).round().astype(np.uint16), (height, 1))


def one_error_line(status, err):
    """The job's single 'error:' line (exit status 2, no traceback)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2, err
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err
    return lines[0]


def upright(pixels, orientation):
    """Pillow's display of ``pixels`` (H, W, 3) uint8 tagged with an EXIF orientation (the reference)."""
    image = Image.fromarray(pixels)
    image.getexif()[0x0112] = orientation
    return np.asarray(ImageOps.exif_transpose(image))


# ------------------------------------------------------------------------------------------ 16-bit PNG

def test_16_bit_grey_png_gradient_keeps_its_gradient(tmp_path):
    values = gradient16()
    source = inspect_image(str(write_png16(tmp_path / "g16.png", values)), PILLOW_MAX_PIXELS)
    assert source.shape == (24, 300, 3) and source.frames == 1
    np.testing.assert_array_equal(source.pixels, grey_to_rgb(to8(values)))
    assert len(np.unique(source.pixels)) == 256


def test_16_bit_grey_png_from_pillow(tmp_path):
    """Pillow's own 16-bit grey PNG (mode I;16) and a PGM of maxval 1000 (mode I, scaled by Pillow)."""
    values = RNG.integers(0, 65536, (13, 17), dtype=np.uint16)
    path = tmp_path / "pillow16.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as im:
        assert im.mode == "I;16"
    np.testing.assert_array_equal(inspect_image(str(path), PILLOW_MAX_PIXELS).pixels, grey_to_rgb(to8(values)))
    grey = RNG.integers(0, 1001, (5, 7), dtype=np.uint16)
    pgm = tmp_path / "g.pgm"
    pgm.write_bytes(b"P5\n7 5\n1000\n" + grey.astype(">u2").tobytes())
    np.testing.assert_array_equal(inspect_image(str(pgm), PILLOW_MAX_PIXELS).pixels,
                                  grey_to_rgb(to8(grey, 1000)))


def test_16_bit_grey_png_with_a_transparent_grey(tmp_path):
    values = RNG.integers(0, 65536, (9, 11), dtype=np.uint16)
    transparent = int(values[3, 4])
    path = write_png16(tmp_path / "t.png", values, _png_chunk(b"tRNS", struct.pack(">H", transparent)))
    pixels = inspect_image(str(path), PILLOW_MAX_PIXELS).pixels
    assert pixels.shape == (9, 11, 4)
    np.testing.assert_array_equal(pixels[..., :3], grey_to_rgb(to8(values)))
    np.testing.assert_array_equal(pixels[..., 3], np.where(values == transparent, 0, 255))


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_16_bit_colour_png_keeps_the_high_byte(tmp_path, channels):
    """Pillow decodes 16-bit grey+alpha, RGB and RGBA PNGs to 8-bit by their high byte (libpng's strip_16):
    within one level of round(v / 257), and a gradient stays a gradient."""
    ramp = gradient16(8, 256)
    samples = np.stack([ramp, ramp[:, ::-1], RNG.integers(0, 65536, ramp.shape), ramp][:channels], axis=2)
    pixels = inspect_image(str(write_png16(tmp_path / "c16.png", samples)), PILLOW_MAX_PIXELS).pixels
    expected = (samples >> 8).astype(np.uint8)
    if channels == 2:
        expected = np.dstack([grey_to_rgb(expected[..., 0]), expected[..., 1]])
    np.testing.assert_array_equal(pixels, expected)
    assert np.abs(pixels[..., 0].astype(int) - to8(ramp)).max() <= 1


# ------------------------------------------------------------------------------------------ TIFF

def test_uint16_and_float_tiffs_are_scaled_to_8_bit(tmp_path):
    rgb16 = RNG.integers(0, 65536, (20, 30, 3), dtype=np.uint16)
    grey16 = RNG.integers(0, 65536, (20, 30), dtype=np.uint16)
    rgbf = RNG.random((20, 30, 3), dtype=np.float32)
    greyf = RNG.random((20, 30)).astype(np.float64)
    cases = {"rgb16": (rgb16, to8(rgb16)), "grey16": (grey16, grey_to_rgb(to8(grey16))),
             "rgbf": (rgbf, np.round(rgbf.astype(np.float64) * 255).astype(np.uint8)),
             "greyf": (greyf, grey_to_rgb(np.round(greyf * 255).astype(np.uint8)))}
    for name, (samples, expected) in cases.items():
        path = tmp_path / f"{name}.tif"
        tifffile.imwrite(path, samples, photometric="rgb" if samples.ndim == 3 else "minisblack")
        source = inspect_image(str(path), PILLOW_MAX_PIXELS)
        assert source.kind == "pillow" and source.shape == (20, 30, 3), name
        np.testing.assert_array_equal(source.pixels, expected, err_msg=name)


def test_tiff_alpha_planar_and_min_is_white(tmp_path):
    rgba = RNG.integers(0, 65536, (10, 12, 4), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    np.testing.assert_array_equal(inspect_image(str(tmp_path / "rgba.tif"), PILLOW_MAX_PIXELS).pixels, to8(rgba))
    planar = RNG.integers(0, 65536, (3, 10, 12), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "planar.tif", planar, photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(inspect_image(str(tmp_path / "planar.tif"), PILLOW_MAX_PIXELS).pixels,
                                  to8(np.moveaxis(planar, 0, -1)))
    grey = RNG.integers(0, 65536, (10, 12), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "white.tif", grey, photometric="miniswhite")
    np.testing.assert_array_equal(inspect_image(str(tmp_path / "white.tif"), PILLOW_MAX_PIXELS).pixels,
                                  grey_to_rgb(to8(65535 - grey.astype(np.int64))))


@pytest.mark.parametrize("samples, words", [
    (np.array([[0.0, 2.5], [0.5, 1.0]], np.float32), ["from 0 to 2.5", "0..1"]),
    (np.array([[0.0, np.nan], [0.5, 1.0]], np.float32), ["NaN"]),
    (np.array([[-3, 200], [5, 7]], np.int16), ["signed 16-bit"]),
], ids=["float-beyond-1", "float-nan", "int16"])
def test_samples_without_a_faithful_8_bit_reading_are_refused(run_job, capsys, tmp_path, samples, words):
    path = tmp_path / "bad.tif"
    tifffile.imwrite(path, np.tile(samples, (4, 4)))
    line = one_error_line(run_job(path, "--out", tmp_path / "o.png", "--k", "2"), capsys.readouterr().err)
    assert all(word in line for word in words), line
    assert not (tmp_path / "o.png").exists()


def test_memory_decoded_tiffs_keep_the_pixel_limit(tmp_path):
    path = tmp_path / "f.tif"
    tifffile.imwrite(path, RNG.random((50, 60), dtype=np.float32))
    with pytest.raises(InputError, match="3000 pixels, more than --max-pixels 2999"):
        inspect_image(str(path), 2999)
    assert inspect_image(str(path), 3000).shape == (50, 60, 3)


def test_png_beyond_pillows_own_bomb_limit_gets_the_jobs_message(tmp_path):
    """Pillow refuses at open an image of more than twice its limit (DecompressionBombError); the job's own
    --max-pixels message must come instead, whatever the limit."""
    path = write_png16(tmp_path / "bomb.png", np.zeros((1, 1), np.uint16), size=(20_000, 10_000))
    with pytest.raises(InputError, match="200000000 pixels, more than --max-pixels"):
        inspect_image(str(path), PILLOW_MAX_PIXELS)


def test_8_bit_rgb_tiff_is_still_read_lazily(tmp_path):
    pixels = RNG.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", pixels, photometric="rgb", tile=(16, 16))
    source = inspect_image(str(tmp_path / "rgb.tif"), PILLOW_MAX_PIXELS)
    assert (source.kind, source.shape, source.frames, source.pixels) == ("tiff", (40, 50, 3), 1, None)


def _gradient_file(folder, kind):
    ramp = gradient16(16, 256)
    if kind == "png-grey16":
        return write_png16(folder / "g.png", ramp)
    samples = np.stack([ramp] * 3, axis=2)
    if kind == "tiff-float32":
        samples = (samples / 65535).astype(np.float32)
    tifffile.imwrite(folder / "g.tif", samples, photometric="rgb")
    return folder / "g.tif"


@pytest.mark.parametrize("kind", ["png-grey16", "tiff-rgb16", "tiff-float32"])
def test_deep_gradients_end_to_end(run_job, capsys, tmp_path, kind):
    """A 16-bit grey PNG, 16-bit RGB TIFF and float32 RGB TIFF gradient through the job: the output follows the
    gradient (the PNG came out 99.5% white, 'lossless'; the float TIFF was refused as 'not an image')."""
    out = tmp_path / "o.png"
    assert run_job(_gradient_file(tmp_path, kind), "--out", out, "--k", "4") == 0, capsys.readouterr().err
    assert "lossless" not in capsys.readouterr().err
    grey = read_png(out)[3][..., 0].astype(int)
    assert len(np.unique(grey)) == 4
    assert np.all(np.diff(grey[0]) >= 0)
    assert np.abs(grey - to8(gradient16(16, 256))).mean() < 20


# ------------------------------------------------------------------------------------------ orientation

def _tagged_jpeg(path, pixels, orientation):
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(path, exif=exif, quality=95)
    return path


def _corner_picture(height=40, width=64):
    """RGB (H, W, 3) uint8 with a white block at the top left and a horizontal ramp: no symmetry."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[..., 1] = np.arange(width)[None] * (255 // width)
    pixels[:height // 4, :width // 3] = 255
    return pixels


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path, orientation):
    path = _tagged_jpeg(tmp_path / f"o{orientation}.jpg", _corner_picture(), orientation)
    source = inspect_image(str(path), PILLOW_MAX_PIXELS)
    with Image.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    assert source.shape == expected.shape
    np.testing.assert_array_equal(source.pixels, expected)
    assert source.shape[:2] == ((64, 40) if orientation >= 5 else (40, 64))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_tiff_orientation_is_applied(tmp_path, orientation):
    """TIFF's Orientation tag (numbered as EXIF's), on a 16-bit TIFF decoded in memory and on an 8-bit RGB TIFF
    that would otherwise be read lazily; :func:`orient` against Pillow."""
    picture = _corner_picture(24, 36)
    np.testing.assert_array_equal(orient(picture, orientation), upright(picture, orientation))
    for name, samples in (("u16", picture.astype(np.uint16) * 257), ("u8", picture)):
        path = tmp_path / f"{name}-{orientation}.tif"
        tifffile.imwrite(path, samples, photometric="rgb", extratags=[(274, 3, 1, orientation, True)])
        source = inspect_image(str(path), PILLOW_MAX_PIXELS)
        lazy = name == "u8" and orientation == 1  # upright 8-bit RGB: still read chunk by chunk
        assert source.kind == ("tiff" if lazy else "pillow")
        pixels = tifffile.imread(path) if lazy else source.pixels
        np.testing.assert_array_equal(pixels, upright(picture, orientation), err_msg=name)


def test_exif_rotated_jpeg_end_to_end(run_job, capsys, tmp_path):
    picture = _corner_picture()
    path = _tagged_jpeg(tmp_path / "rotated.jpg", picture, 6)
    out = tmp_path / "o.png"
    assert run_job(path, "--out", out, "--k", "4") == 0, capsys.readouterr().err
    written = read_png(out)[3]
    reference = upright(picture, 6)
    assert written.shape == reference.shape == (64, 40, 3)
    white = reference.min(axis=2) == 255
    assert written[white].min() > 200 and written[~white].min(axis=1).max() < 200


# ------------------------------------------------------------------------------------------ frames

def _frames(n=5, height=10, width=12):
    return [np.full((height, width, 3), (40 * i, 255 - 40 * i, 7), np.uint8) for i in range(n)]


@pytest.mark.parametrize("suffix", [".gif", ".png", ".webp", ".tiff"])
def test_animations_and_pages_are_counted_and_the_first_is_read(tmp_path, suffix):
    frames = _frames()
    path = tmp_path / f"anim{suffix}"
    images = [Image.fromarray(f) for f in frames]
    options = {"duration": 100, "loop": 0} if suffix != ".tiff" else {}
    if suffix == ".webp":
        options["lossless"] = True
    images[0].save(path, save_all=True, append_images=images[1:], **options)
    source = inspect_image(str(path), PILLOW_MAX_PIXELS)
    assert source.frames == 5
    first = source.pixels if source.pixels is not None else tifffile.imread(path, key=0)
    np.testing.assert_array_equal(first, frames[0])


def test_single_frame_images_have_one_frame(tmp_path, small_china_png):
    assert inspect_image(str(small_china_png), PILLOW_MAX_PIXELS).frames == 1
    assert ImageSource(tmp_path, "zarr", (1, 1, 3)).frames == 1


def test_animated_gif_end_to_end_keeps_every_frame(run_job, capsys, tmp_path):
    frames = [Image.fromarray(f) for f in _frames(7)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    out, report = tmp_path / "o.png", tmp_path / "report.json"
    assert run_job(tmp_path / "anim.gif", "--out", out, "--k", "8", "--report", report) == 0
    with Image.open(out) as written:
        assert written.n_frames == 7
        for number, expected in enumerate(_frames(7)):
            written.seek(number)
            np.testing.assert_array_equal(np.asarray(written.convert("RGB")), expected)
    assert json.loads(report.read_text())["frames"] == 7


def test_multi_page_rgb_tiff_end_to_end(run_job, capsys, tmp_path):
    """A multi-page tiled RGB TIFF: every page, with one palette, as an APNG."""
    pages = np.stack([np.full((48, 64, 3), v, np.uint8) for v in (10, 200, 90)])
    pages[0, :, 32:] = (250, 20, 20)
    tifffile.imwrite(tmp_path / "pages.tif", pages, photometric="rgb", tile=(16, 16))
    out = tmp_path / "o.png"
    assert run_job(tmp_path / "pages.tif", "--out", out, "--k", "4", "--chunk-size", "32") == 0
    with Image.open(out) as written:
        assert written.n_frames == 3
        for number, expected in enumerate(pages):
            written.seek(number)
            np.testing.assert_array_equal(np.asarray(written.convert("RGB")), expected)


# ------------------------------------------------------------------------------------------ outputs

def test_output_folder_is_refused_in_one_line(run_job, capsys, tmp_path, small_china_png):
    folder = tmp_path / "out"
    folder.mkdir()
    line = one_error_line(run_job(small_china_png, "--out", f"{folder}/"), capsys.readouterr().err)
    assert "is a folder" in line and ".png" in line and "unknown format" not in line, line
    line = one_error_line(run_job(small_china_png, "--out", f"{tmp_path}/new/"), capsys.readouterr().err)
    assert "folder" in line and "unknown format" not in line, line
    assert sorted(p.name for p in folder.iterdir()) == []


def test_check_output_accepts_an_existing_zarr_folder(tmp_path):
    store = tmp_path / "o.zarr"
    store.mkdir()
    check_output(store, overwrite=True, suffixes=OUTPUT_SUFFIXES)
    with pytest.raises(InputError, match="is a folder"):
        check_output(store, overwrite=True, suffixes=(".png",))
    with pytest.raises(InputError, match="exists; pass --overwrite"):
        check_output(store, overwrite=False, suffixes=OUTPUT_SUFFIXES)


def test_premultiplied_8_bit_rgba_tiff_is_divided_by_its_alpha(tmp_path):
    """An 8-bit RGBA TIFF with associated (premultiplied) alpha is not read as straight alpha: its colours are
    divided by alpha, as a viewer composites them."""
    straight = np.full((20, 30, 3), 200, np.uint8)
    alpha = np.full((20, 30, 1), 128, np.uint8)
    premultiplied = np.concatenate([np.rint(straight * (128 / 255)).astype(np.uint8), alpha], axis=2)
    tifffile.imwrite(tmp_path / "pre.tif", premultiplied, photometric="rgb", extrasamples=["assocalpha"])
    source = inspect_image(str(tmp_path / "pre.tif"), PILLOW_MAX_PIXELS)
    assert source.shape == (20, 30, 4)
    assert np.abs(source.pixels[..., :3].astype(int) - 200).max() <= 1 and (source.pixels[..., 3] == 128).all()


def _srgb_profile():
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.mark.parametrize("suffix", [".png", ".tif", ".zarr"])
def test_an_rgb_colour_profile_goes_with_the_output(run_job, capsys, tmp_path, small_china, suffix):
    """Colour-managed viewers show the output's colours as the input's only if the output carries the input's
    profile (a wide-gamut photo without it shifts its colours)."""
    import base64

    import zarr

    profile = _srgb_profile()
    Image.fromarray(np.asarray(small_china)).save(tmp_path / "tagged.png", icc_profile=profile)
    out, report = tmp_path / f"out{suffix}", tmp_path / "r.json"
    assert run_job(tmp_path / "tagged.png", "--out", out, "--k", 8, "--report", report) == 0, capsys.readouterr().err
    if suffix == ".png":
        with Image.open(out) as im:
            assert im.info.get("icc_profile") == profile
    elif suffix == ".tif":
        with tifffile.TiffFile(out) as tif:
            assert bytes(tif.pages.first.tags.valueof(34675)) == profile
    else:
        assert base64.b64decode(zarr.open_group(str(out), mode="r").attrs["icc_profile"]) == profile
    assert json.loads(report.read_text())["icc_profile_bytes"] == len(profile)


def test_a_grey_profile_is_not_put_on_rgb_pixels(run_job, capsys, tmp_path):
    from PIL import ImageCms

    grey = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()  # a profile whose data are not RGB
    Image.fromarray(np.tile(np.arange(0, 250, 10, dtype=np.uint8), (10, 1))).save(tmp_path / "g.png",
                                                                                   icc_profile=grey)
    assert run_job(tmp_path / "g.png", "--out", tmp_path / "o.png", "--k", 4) == 0
    assert "colour profile does not apply" in capsys.readouterr().err
    with Image.open(tmp_path / "o.png") as im:
        assert "icc_profile" not in im.info
