"""The palette PNG encoder (``mixlib.image.writers.encode_png``): exact colours, every candidate layout,
deterministic bytes, and no larger than the previous default on a photo."""

import io

import numpy as np
import pytest
from PIL import Image

import mixlib.image.writers as writers
from mixlib.image.writers import encode_png, write_png


def palette_of(k, channels, seed=0):
    """k distinct random colours; with 4 channels, entry 0 fully transparent and a few half transparent."""
    rng = np.random.default_rng(seed)
    codes = rng.choice(1 << 24, size=k, replace=False)
    colours = np.stack([(codes >> shift) & 255 for shift in (16, 8, 0)], axis=1).astype(np.uint8)
    if channels == 3:
        return colours
    alpha = np.full(k, 255, dtype=np.uint8)
    alpha[0] = 0
    alpha[1:k:3] = rng.integers(1, 255, size=len(alpha[1:k:3]))
    return np.column_stack([colours, alpha])


def labels_of(k, shape=(61, 83), seed=0):
    """Indices below k: a smooth diagonal ramp on the top half, noise on the bottom (both kinds of rows)."""
    height, width = shape
    rng = np.random.default_rng(seed)
    ramp = (np.add.outer(np.arange(height), np.arange(width)) * k // (height + width)) % k
    noise = rng.integers(0, k, size=shape)
    labels = np.where(np.arange(height)[:, None] < height // 2, ramp, noise).astype(np.uint8)
    labels.flat[:k] = np.arange(k)  # every entry used
    return labels


def decoded_rgba(data):
    """The RGBA pixels a PNG decodes to."""
    image = Image.open(io.BytesIO(data))
    assert image.mode == "P"
    return np.asarray(image.convert("RGBA"))


def expected_rgba(labels, palette):
    colours = palette[labels]
    if palette.shape[1] == 3:
        colours = np.dstack([colours, np.full(labels.shape, 255, dtype=np.uint8)])
    return colours


def old_default(labels, palette):
    """The previous writer: Pillow with zlib's RLE strategy, optimize=False."""
    image = Image.fromarray(labels)
    image.putpalette(palette.tobytes(), rawmode="RGBA" if palette.shape[1] == 4 else "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_type=3)
    return buffer.getvalue()


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("k", [1, 2, 16, 200, 256])
def test_decodes_to_exactly_the_colours(k, channels):
    palette, labels = palette_of(k, channels), labels_of(k)
    assert np.array_equal(decoded_rgba(encode_png(labels, palette)), expected_rgba(labels, palette))


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("k", [2, 3, 5, 16, 17, 256])
def test_every_candidate_layout_decodes_exactly(k, channels):
    """Whichever layout wins (palette order, row filters, packed bits), its file has the same pixels."""
    palette, labels = palette_of(k, channels, seed=k), labels_of(k, shape=(29, 37), seed=k)
    layouts = list(writers._png_layouts(labels, palette))
    assert len(layouts) == (4 if k <= 16 else 2)
    for layout in layouts:
        data = writers._png_file(layout, writers._deflate(layout))
        assert np.array_equal(decoded_rgba(data), expected_rgba(labels, palette)), (layout.row_filter, layout.depth)


def test_transparency_chunk_covers_the_transparent_entries():
    palette = palette_of(40, 4)
    labels = labels_of(40)
    image = Image.open(io.BytesIO(encode_png(labels, palette)))
    transparency = np.frombuffer(image.info["transparency"], dtype=np.uint8)
    assert (transparency < 255).sum() == (palette[:, 3] < 255).sum()
    assert transparency[-1] < 255  # it stops at the last entry that is not opaque


@pytest.mark.parametrize("stream_pixels", [5000, 1 << 26])
def test_rows_in_strips(monkeypatch, stream_pixels):
    """Rows are filtered strip by strip (each strip's filters see the row above it), deflated whole or, above
    PNG_STREAM_PIXELS, strip by strip by zlib; the trial sees a sample of the strips: the pixels are the same,
    for every candidate layout."""
    monkeypatch.setattr(writers, "PNG_STRIP_PIXELS", 1000)
    monkeypatch.setattr(writers, "PNG_TRIAL_PIXELS", 3000)
    monkeypatch.setattr(writers, "PNG_STREAM_PIXELS", stream_pixels)
    monkeypatch.setattr(writers, "PNG_IDAT_BYTES", 512)
    for k, channels in ((7, 4), (64, 3)):
        palette, labels = palette_of(k, channels), labels_of(k, shape=(211, 97))
        assert len(writers._trial_rows(*labels.shape)) < len(writers._row_strips(*labels.shape))
        assert np.array_equal(decoded_rgba(encode_png(labels, palette)), expected_rgba(labels, palette))
        for layout in writers._png_layouts(labels, palette):
            data = writers._png_file(layout, writers._deflate(layout))
            assert np.array_equal(decoded_rgba(data), expected_rgba(labels, palette))


def test_bytes_are_deterministic(tmp_path):
    palette, labels = palette_of(64, 4), labels_of(64)
    data = encode_png(labels, palette)
    assert encode_png(labels.copy(), palette.copy()) == data
    write_png(tmp_path / "a.png", labels, palette)
    write_png(str(tmp_path / "b.png"), labels, palette)
    assert (tmp_path / "a.png").read_bytes() == data == (tmp_path / "b.png").read_bytes()


@pytest.mark.parametrize("k", [16, 64, 256])
def test_photo_no_larger_than_the_previous_default(china, k):
    quantised = Image.fromarray(np.asarray(china)).quantize(k, method=Image.Quantize.MEDIANCUT, dither=0)
    labels = np.asarray(quantised)
    palette = np.array(quantised.getpalette(rawmode="RGB")[:3 * k], dtype=np.uint8).reshape(-1, 3)
    data = encode_png(labels, palette)
    assert np.array_equal(decoded_rgba(data), expected_rgba(labels, palette))
    assert len(data) <= len(old_default(labels, palette))
