"""Colour codes, histograms and lookups (mixlib.image.colors) against independent references: a Counter, numpy's
unique, explicit loops."""

import numpy as np
import pytest

from mixlib.image import colors
from mixlib.image.colors import ColourLookup, colour_codes, colour_histogram, decode_colours, histogram_chunk

# ----------------------------------------------------------------------------------------- colours

def reference_codes(pixels):
    """Colour codes computed independently with int64 arithmetic."""
    p = pixels.astype(np.int64)
    if pixels.shape[-1] == 3:
        return p[..., 0] * 65536 + p[..., 1] * 256 + p[..., 2]
    codes = p[..., 0] * 2 ** 24 + p[..., 1] * 65536 + p[..., 2] * 256 + p[..., 3]
    return np.where(p[..., 3] == 0, 0, codes)


@pytest.mark.parametrize("channels", [3, 4])
def test_colour_codes_round_trip(channels):
    rng = np.random.default_rng(10)
    pixels = rng.integers(0, 256, size=(50, 40, channels), dtype=np.uint8)
    if channels == 4:
        pixels[::3, ::2, 3] = 0
        pixels[1, 1] = [255, 255, 255, 255]
    pixels[0, 0, :3] = 255

    codes = colour_codes(pixels)
    assert codes.dtype == np.uint32 and codes.shape == (50, 40)
    np.testing.assert_array_equal(codes.astype(np.int64), reference_codes(pixels))

    decoded = decode_colours(codes.ravel(), channels).reshape(pixels.shape)
    expected = pixels.copy()
    if channels == 4:
        transparent = pixels[..., 3] == 0
        assert transparent.any()
        assert (codes[transparent] == 0).all()
        expected[transparent] = 0
    np.testing.assert_array_equal(decoded, expected)


def random_image(rng, shape, levels=5, channels=3):
    """An image whose pixels take few distinct colours, so that counts exceed one."""
    pixels = (rng.integers(0, levels, size=shape + (channels,)) * (255 // (levels - 1))).astype(np.uint8)
    if channels == 4:
        pixels[..., 3] = rng.choice([0, 90, 255], size=shape)
    return pixels


def test_merge_histograms_against_a_counter():
    """Unions of random sorted code sets (some empty, some overlapping) against collections.Counter."""
    import collections

    rng = np.random.default_rng(5)
    for trial in range(20):
        parts, expected = [], collections.Counter()
        for _ in range(int(rng.integers(1, 9))):
            codes = np.unique(rng.integers(0, 2**32, size=int(rng.integers(0, 50)), dtype=np.uint32)
                              % np.uint32(rng.choice([60, 2**32 - 1])))
            counts = rng.integers(1, 1000, size=len(codes)).astype(np.int64)
            parts.append({"codes": codes, "counts": counts})
            expected.update(dict(zip(codes.tolist(), counts.tolist())))
        merged = colors.merge_histograms(parts)
        assert merged["codes"].dtype == np.uint32
        assert merged["codes"].tolist() == sorted(expected)
        assert merged["counts"].tolist() == [expected[c] for c in sorted(expected)]


@pytest.mark.parametrize("channels", [3, 4])
def test_merge_histograms_of_blocks_equals_whole(channels):
    """Against np.unique of the whole image, merging the blocks' histograms at once and in two levels."""
    rng = np.random.default_rng(11)
    for trial in range(4):
        pixels = random_image(rng, (int(rng.integers(5, 40)), int(rng.integers(5, 40))), channels=channels)
        whole = histogram_chunk(pixels)
        h, w = pixels.shape[:2]
        rows = sorted(set(rng.integers(1, h, size=3).tolist()))
        cols = sorted(set(rng.integers(1, w, size=2).tolist()))
        blocks = [pixels[r0:r1, c0:c1] for r0, r1 in zip([0] + rows, rows + [h])
                  for c0, c1 in zip([0] + cols, cols + [w])]
        parts = [histogram_chunk(b) for b in blocks]
        for merged in (colors.merge_histograms(parts),
                       colors.merge_histograms([colors.merge_histograms(parts[:2]),
                                                colors.merge_histograms(parts[2:])])):
            np.testing.assert_array_equal(merged["codes"], whole["codes"])
            np.testing.assert_array_equal(merged["counts"], whole["counts"])
        assert whole["counts"].sum() == h * w


@pytest.mark.parametrize("channels", [3, 4])
def test_colour_histogram_on_dask_equals_numpy_unique(client, channels):
    import dask.array as da

    pixels = random_image(np.random.default_rng(12), (101, 77), channels=channels)
    image = da.from_array(pixels, chunks=(20, 30, channels))

    hist = colour_histogram(image, split_every=3).compute()

    reference = pixels.reshape(-1, channels).copy()
    if channels == 4:
        reference[reference[:, 3] == 0] = 0
    colours, counts = np.unique(reference, axis=0, return_counts=True)
    np.testing.assert_array_equal(decode_colours(hist["codes"], channels), colours)
    np.testing.assert_array_equal(hist["counts"], counts)
    assert np.all(np.diff(hist["codes"].astype(np.int64)) > 0)


@pytest.mark.parametrize("channels,label_dtype", [(3, np.uint8), (3, np.uint16), (4, np.uint8), (4, np.uint16)])
def test_colour_lookup_maps_codes_to_labels(channels, label_dtype):
    rng = np.random.default_rng(13)
    pixels = random_image(rng, (33, 47), levels=9, channels=channels)
    codes = np.unique(reference_codes(pixels))
    labels = rng.integers(0, np.iinfo(label_dtype).max, size=len(codes)).astype(label_dtype)
    lookup = ColourLookup(codes.astype(np.uint32), labels, channels)

    mapped = lookup(pixels)

    table = dict(zip(codes.tolist(), labels.tolist()))
    expected = np.vectorize(table.__getitem__)(reference_codes(pixels))
    assert mapped.shape == (33, 47)
    np.testing.assert_array_equal(mapped, expected)


def test_rgba_lookup_with_crowded_and_empty_buckets():
    """The RGBA lookup searches the codes that share a pixel's high 16 bits: thousands in one bucket (red and green
    fixed), one alone at each end of the code range, and fully transparent pixels (code 0)."""
    rng = np.random.default_rng(5)
    pixels = np.zeros((64, 80, 4), np.uint8)
    pixels[..., :2] = (200, 17)
    pixels[..., 2:] = rng.integers(0, 256, (64, 80, 2))
    pixels[0, 0], pixels[0, 1], pixels[0, 2] = (255, 255, 255, 255), (0, 0, 0, 1), (9, 9, 9, 0)
    codes = np.unique(reference_codes(pixels))
    labels = rng.integers(0, 65535, size=len(codes)).astype(np.uint16)
    mapped = ColourLookup(codes.astype(np.uint32), labels, 4)(pixels)
    expected = labels[np.searchsorted(codes, reference_codes(pixels))]
    np.testing.assert_array_equal(mapped, expected)
    assert len(codes) > 3000


@pytest.mark.parametrize("top", [0, 1, 1 << 12, 1 << 24, 1 << 32])
def test_code_counts_equal_numpy_unique(top):
    """The radix sort's distinct codes and counts, against numpy's: RGB and RGBA ranges (one, two and three passes),
    the largest code, repeats, and empty and one-code inputs."""
    from mixlib.image.compiled import code_counts

    rng = np.random.default_rng(top % 997)
    codes = rng.integers(0, max(top, 1), 50_000, dtype=np.uint64).astype(np.uint32)
    codes[:3] = (0xFFFFFFFF if top == 1 << 32 else max(top - 1, 0))
    for sample in (codes, codes[:0], codes[:1], np.repeat(codes[:50], 7)):
        values, counts = code_counts(sample)
        expected_values, expected_counts = np.unique(sample, return_counts=True)
        np.testing.assert_array_equal(values, expected_values)
        np.testing.assert_array_equal(counts, expected_counts)
        assert values.dtype == np.uint32 and counts.dtype == np.int64
