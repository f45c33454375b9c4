"""Compiled per-pixel loops behind the colour histogram and the palette lookup (numba, without the GIL): colour
codes and their counts, the RGB lookup table, the RGBA lookup by buckets and the merge of two sorted histograms.
Compiled code is cached next to this file."""

import numba
import numpy as np

_compiled = numba.njit(nogil=True, cache=True)
_inlined = numba.njit(nogil=True, cache=True, inline="always")  # helpers of the per-pixel loops


@_inlined
def _colour_code(pixels, i, j):
    """The colour code of pixel ``(i, j)`` of ``pixels (h, w, C)`` uint8 (see :mod:`mixlib.image.colors`):
    ``r<<16 | g<<8 | b``, or ``r<<24 | g<<16 | b<<8 | a`` with 0 for every fully transparent pixel."""
    channels = pixels.shape[2]
    code = 0
    for c in range(channels):
        code = (code << 8) | np.int64(pixels[i, j, c])
    if channels == 4 and pixels[i, j, 3] == 0:
        code = 0
    return code


@_compiled
def colour_codes(pixels):
    """Colour codes ``(h, w)`` uint32 of ``pixels (h, w, C)`` uint8, C = 3 or 4."""
    codes = np.empty(pixels.shape[:2], np.uint32)
    for i in range(pixels.shape[0]):
        for j in range(pixels.shape[1]):
            codes[i, j] = _colour_code(pixels, i, j)
    return codes


@_compiled
def rgb_lookup(pixels, table):
    """``table[code]`` ``(h, w)`` for the colour code of each pixel of ``pixels (h, w, 3)`` uint8, with a table
    ``(2^24,)`` of any dtype."""
    out = np.empty(pixels.shape[:2], table.dtype)
    for i in range(pixels.shape[0]):
        for j in range(pixels.shape[1]):
            out[i, j] = table[_colour_code(pixels, i, j)]
    return out


RADIX_BITS = 12  # the digit of code_counts' radix sort: two passes over RGB codes, three over RGBA


@_compiled
def code_counts(codes):
    """The distinct values of ``codes (n,)`` uint32, sorted, and how often each occurs ``(m,)`` int64: what
    ``np.unique(codes, return_counts=True)`` gives, by a least-significant-digit radix sort (``RADIX_BITS`` a pass,
    as many passes as the largest code needs) and run lengths, in linear time where numpy sorts by comparisons
    (docs/architecture.md has the measurement)."""
    n = len(codes)
    top = 0
    for i in range(n):
        top = max(top, np.int64(codes[i]))
    ordered, spare = codes.copy(), np.empty_like(codes)
    digits = 1 << RADIX_BITS
    shift = 0
    while shift == 0 or (top >> shift) > 0:
        starts = np.zeros(digits + 1, np.int64)
        for i in range(n):
            starts[((np.int64(ordered[i]) >> shift) & (digits - 1)) + 1] += 1
        for d in range(digits):
            starts[d + 1] += starts[d]
        for i in range(n):
            d = (np.int64(ordered[i]) >> shift) & (digits - 1)
            spare[starts[d]] = ordered[i]
            starts[d] += 1
        ordered, spare = spare, ordered
        shift += RADIX_BITS
    distinct = 0
    for i in range(n):
        distinct += i == 0 or ordered[i] != ordered[i - 1]
    values = np.empty(distinct, codes.dtype)
    counts = np.zeros(distinct, np.int64)
    j = -1
    for i in range(n):
        if i == 0 or ordered[i] != ordered[i - 1]:
            j += 1
            values[j] = ordered[i]
        counts[j] += 1
    return values, counts


@_compiled
def bucketed_lookup(pixels, codes, starts, labels):
    """``labels[i]`` of ``codes[i]``, the colour code of each pixel of ``pixels (h, w, C)`` uint8: ``(h, w)``.

    ``codes (M,)`` are sorted and hold every pixel's code; ``starts (2^16 + 1,)`` are where the codes of each
    value of their high 16 bits start, so that a pixel's binary search runs over its bucket only (a few codes, in
    cache) instead of all of them.
    """
    out = np.empty(pixels.shape[:2], labels.dtype)
    for i in range(pixels.shape[0]):
        for j in range(pixels.shape[1]):
            code = _colour_code(pixels, i, j)
            bucket = code >> 16
            low, high = starts[bucket], starts[bucket + 1]
            while low < high:
                middle = (low + high) >> 1
                if codes[middle] < code:
                    low = middle + 1
                else:
                    high = middle
            out[i, j] = labels[low]
    return out


@_compiled
def merge_counts(codes_a, counts_a, codes_b, counts_b):
    """The union of two sorted arrays of distinct codes ``(m,)``, ``(n,)``, with the counts ``(m,)``, ``(n,)``
    int64 of a code present in both added: one pass, ``O(m + n)``."""
    codes = np.empty(len(codes_a) + len(codes_b), codes_a.dtype)
    counts = np.empty(len(codes), np.int64)
    i = j = size = 0
    while i < len(codes_a) or j < len(codes_b):
        take_a = j == len(codes_b) or (i < len(codes_a) and codes_a[i] <= codes_b[j])
        take_b = i == len(codes_a) or (j < len(codes_b) and codes_b[j] <= codes_a[i])
        codes[size] = codes_a[i] if take_a else codes_b[j]
        counts[size] = (counts_a[i] if take_a else 0) + (counts_b[j] if take_b else 0)
        i += take_a
        j += take_b
        size += 1
    return codes[:size].copy(), counts[:size].copy()


def warm_up():
    """Load every compiled loop of this module (from the cache, or compile it)."""
    pixels = np.zeros((1, 1, 3), np.uint8)
    colour_codes(pixels)
    rgb_lookup(pixels, np.zeros(1, np.uint8))
    codes = np.arange(2, dtype=np.uint32)
    code_counts(codes)
    bucketed_lookup(np.zeros((1, 1, 4), np.uint8), codes, np.zeros((1 << 16) + 1, np.int64), np.zeros(2, np.uint8))
    merge_counts(codes, np.ones(2, np.int64), codes, np.ones(2, np.int64))
