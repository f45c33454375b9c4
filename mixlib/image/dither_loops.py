"""The compiled loops of :mod:`mixlib.image.dither` (numba, without the GIL), cached next to this file; the
maths is written there."""

import numba
import numpy as np

_compiled = numba.njit(nogil=True, cache=True)
_inlined = numba.njit(nogil=True, cache=True, inline="always")
PADDED = 4  # candidates of a cell compared without a branch (most cells have fewer)
CROWDED = 65535  # padded[cell, 0] of a cell with more candidates than PADDED (entry 65535 first: searched alike)


@_compiled
def cell_candidates(entries, bits):
    """For every cell of the cube ``[0, 256]^C`` cut into ``2^bits`` equal parts per channel (cell index: the
    channels' parts, most significant first), the indices of the entries of ``entries (k, C)`` that can be nearest
    to a point in it, ascending: ``(starts (cells + 1,) int32, candidates (n,) uint16, padded (cells, PADDED)
    uint16)``, cell ``i``'s at ``candidates[starts[i]:starts[i + 1]]`` and, when it has at most PADDED, in
    ``padded[i]`` followed by copies of its last (else ``padded[i, 0]`` is CROWDED). Small tables: the search reads
    them once per pixel."""
    k, channels = entries.shape
    parts = 1 << bits
    width = 256.0 / parts
    cells = parts ** channels
    starts = np.zeros(cells + 1, np.int32)
    lists = []
    least = np.empty(k)
    for cell in range(cells):
        threshold = np.inf
        for j in range(k):
            nearest_distance, farthest_distance = 0.0, 0.0
            rest = cell
            for c in range(channels - 1, -1, -1):
                low = (rest % parts) * width
                rest //= parts
                value = entries[j, c]
                below, above = low - value, value - (low + width)
                gap = max(below, above, 0.0)
                far = max(abs(value - low), abs(value - low - width))
                nearest_distance += gap * gap
                farthest_distance += far * far
            least[j] = nearest_distance
            threshold = min(threshold, farthest_distance)
        members = np.nonzero(least <= threshold)[0]
        lists.append(members)
        starts[cell + 1] = starts[cell] + len(members)
    candidates = np.empty(starts[-1], np.uint16)
    padded = np.zeros((cells, PADDED), np.uint16)
    for cell in range(cells):
        members = lists[cell]
        candidates[starts[cell]:starts[cell + 1]] = members
        if len(members) <= PADDED:
            padded[cell, :len(members)] = members
            padded[cell, len(members):] = members[-1]
        else:
            padded[cell, 0] = CROWDED
    return starts, candidates, padded


@_inlined
def _cell_of(value, bits):
    """The cell of ``value (C,)`` float64 in 0..255 (:func:`cell_candidates`)."""
    cell = 0
    for c in range(len(value)):
        cell = (cell << bits) | (np.int64(value[c]) >> (8 - bits))
    return cell


@_inlined
def _nearest_in_cell(value, cell, entries, starts, candidates, padded):
    """The index of the entry of ``entries (k, C)`` nearest to ``value (C,)`` float64 (squared Euclidean distance;
    of equal distances the lowest index) among the candidates of its ``cell``. A cell of at most PADDED candidates
    compares them all, the nearest so far kept by a mask rather than a branch (hard to predict: the value moves
    with the error); a crowded cell loops over its list."""
    if padded[cell, 0] != CROWDED:
        slot, best = 0, _distance(value, entries, padded[cell, 0])
        for m in range(1, PADDED):
            distance = _distance(value, entries, padded[cell, m])
            nearer = np.int64(distance < best)
            slot ^= (slot ^ m) & -nearer
            best = min(distance, best)
        return padded[cell, slot]
    best, best_index = np.inf, 0
    for n in range(starts[cell], starts[cell + 1]):
        distance = _distance(value, entries, candidates[n])
        if distance < best:
            best, best_index = distance, candidates[n]
    return best_index


@_inlined
def _distance(value, entries, i):
    """The squared Euclidean distance from ``value (C,)`` to entry ``i`` of ``entries (k, C)``."""
    distance = 0.0
    for c in range(entries.shape[1]):
        difference = value[c] - entries[i, c]
        distance += difference * difference
    return distance


@_inlined
def _pixel_value(pixels, y, x, c):
    """Sample ``c`` of pixel ``(y, x)`` as float64; a fully transparent RGBA pixel counts as (0, 0, 0, 0), and an
    RGB pixel's alpha (``c`` = 3, for an RGBA palette) is 255."""
    if c >= pixels.shape[2]:
        return 255.0
    if pixels.shape[2] == 4 and pixels[y, x, 3] == 0:
        return 0.0
    return np.float64(pixels[y, x, c])


@_compiled
def floyd_steinberg_strip(pixels, entries, starts, candidates, padded, bits, weights, carry, labels, squared):
    """Floyd-Steinberg over the rows of ``pixels (h, W, C)`` uint8 (whole rows of the image), in raster order.

    ``entries (k, C')`` float64 the palette (C' = C, or 4 for an RGB image, whose alpha is 255); ``starts``,
    ``candidates``, ``padded``, ``bits`` its :class:`~mixlib.image.dither.NearestSearch`; ``weights (4,)`` float64
    the error's shares (right, below left, below, below right) times the level; ``carry (W, C')`` float64 the error
    carried into the first row, updated in place to the error carried out of the last; ``labels (h, W)`` receives
    the palette indices and ``squared (h,)`` float64 each row's squared error, the sum over its pixels and the
    image's C channels of ``(pixel - entry)^2`` (transparent pixels as in the histogram; integers, exact). RGB goes
    through :func:`floyd_steinberg_rgb_piece` as one piece, others to :func:`_floyd_steinberg_any`.
    """
    height, width = pixels.shape[:2]
    if pixels.shape[2] == 3 and entries.shape[1] == 3:
        errors = np.zeros((2, width + 2, 3))
        errors[0, 1:width + 1] = carry
        floyd_steinberg_rgb_piece(pixels, entries, starts, candidates, padded, bits, weights, errors, labels,
                                  squared, 0, height, 0, 1, width)
        carry[:] = errors[height % 2, 1:width + 1]
    else:
        _floyd_steinberg_any(pixels, entries, starts, candidates, padded, bits, weights, carry, labels, squared)


@numba.njit(nogil=True, cache=True)
def floyd_steinberg_rgb_piece(pixels, entries, starts, candidates, padded, bits, weights, errors, labels, squared,
                              top, rows, piece, pieces, width_each):
    """Floyd-Steinberg of RGB over one piece of a strip: rows ``top:top + rows`` of ``pixels (h, W, 3)``, cut into
    ``pieces`` side by side, this one the ``piece``-th, whose row ``r`` spans the columns from ``piece *
    width_each - 2r`` to ``(piece + 1) * width_each - 2r`` (clipped to the image; the first piece starts at 0 and
    the last ends at W). The slant follows the error's reach: a pixel needs the row above up to one column to its
    right, which lies in its own piece or in one done before it (see :func:`mixlib.image.dither.dither_strip`).

    ``errors (S, W + 2, 3)`` float64 holds the error carried to each pixel, row ``y`` in ``errors[y % S]``, column
    ``x`` at ``x + 1`` (a column of padding each side takes the shares that leave the image). Column ``x`` of the
    row below takes shares from the pixels ``x - 1``, ``x`` and ``x + 1`` in turn: the loop keeps the sums of the
    two columns still open in registers and stores a column once, when its last share is added; a piece starts
    from the open sums that the piece to its left stored at its end (none for the first) and stores its own at its
    end, so the row below is written whole, once, with no clearing. The error carried right stays in registers
    too. The sums are the raster order's, in the same order, whatever the pieces. Each row's squared error is added
    to ``squared[y]``.
    """
    width = pixels.shape[1]
    slots = errors.shape[0]
    w_right, w_below_left, w_below, w_below_right = weights[0], weights[1], weights[2], weights[3]
    shift = 8 - bits
    for r in range(rows):
        y = top + r
        start = 0 if piece == 0 else min(max(piece * width_each - 2 * r, 0), width)
        end = width if piece == pieces - 1 else min(max((piece + 1) * width_each - 2 * r, 0), width)
        current, below = errors[y % slots], errors[(y + 1) % slots]
        if start >= end:
            continue
        r0, r1, r2 = current[start + 1, 0], current[start + 1, 1], current[start + 1, 2]
        a0, a1, a2, b0, b1, b2 = 0.0, 0.0, 0.0, 0.0, 0.0, 0.0  # open sums of columns x - 1 and x below
        if start > 0:
            a0, a1, a2 = below[start, 0], below[start, 1], below[start, 2]
            b0, b1, b2 = below[start + 1, 0], below[start + 1, 1], below[start + 1, 2]
        row_squared = 0.0
        for x in range(start, end):
            p0, p1, p2 = np.float64(pixels[y, x, 0]), np.float64(pixels[y, x, 1]), np.float64(pixels[y, x, 2])
            v0 = min(max(p0 + r0, 0.0), 255.0)
            v1 = min(max(p1 + r1, 0.0), 255.0)
            v2 = min(max(p2 + r2, 0.0), 255.0)
            # _nearest_in_cell, written out here with the value in registers (as a function: 15% slower)
            cell = (((np.int32(v0) >> shift) << (2 * bits)) | ((np.int32(v1) >> shift) << bits)
                    | (np.int32(v2) >> shift))
            if padded[cell, 0] != CROWDED:
                i = padded[cell, 0]
                d0, d1, d2 = v0 - entries[i, 0], v1 - entries[i, 1], v2 - entries[i, 2]
                slot, best = 0, d0 * d0 + d1 * d1 + d2 * d2
                for m in range(1, PADDED):
                    i = padded[cell, m]
                    d0, d1, d2 = v0 - entries[i, 0], v1 - entries[i, 1], v2 - entries[i, 2]
                    distance = d0 * d0 + d1 * d1 + d2 * d2
                    nearer = np.int64(distance < best)
                    slot ^= (slot ^ m) & -nearer
                    best = min(distance, best)
                index = padded[cell, slot]
            else:
                best, index = np.inf, 0
                for n in range(starts[cell], starts[cell + 1]):
                    i = candidates[n]
                    d0, d1, d2 = v0 - entries[i, 0], v1 - entries[i, 1], v2 - entries[i, 2]
                    distance = d0 * d0 + d1 * d1 + d2 * d2
                    if distance < best:
                        best, index = distance, i
            labels[y, x] = index
            f0, f1, f2 = entries[index, 0], entries[index, 1], entries[index, 2]
            e0, e1, e2 = v0 - f0, v1 - f1, v2 - f2
            q0, q1, q2 = p0 - f0, p1 - f1, p2 - f2
            row_squared += q0 * q0 + q1 * q1 + q2 * q2
            r0 = current[x + 2, 0] + e0 * w_right
            r1 = current[x + 2, 1] + e1 * w_right
            r2 = current[x + 2, 2] + e2 * w_right
            below[x, 0] = a0 + e0 * w_below_left  # column x - 1 has all its shares
            below[x, 1] = a1 + e1 * w_below_left
            below[x, 2] = a2 + e2 * w_below_left
            a0, a1, a2 = b0 + e0 * w_below, b1 + e1 * w_below, b2 + e2 * w_below
            b0, b1, b2 = e0 * w_below_right, e1 * w_below_right, e2 * w_below_right
        below[end, 0], below[end, 1], below[end, 2] = a0, a1, a2  # for the next piece, or the last column's
        below[end + 1, 0], below[end + 1, 1], below[end + 1, 2] = b0, b1, b2
        current[end + 1, 0], current[end + 1, 1], current[end + 1, 2] = r0, r1, r2  # for the next piece's first
        squared[y] += row_squared


@_inlined
def _floyd_steinberg_any(pixels, entries, starts, candidates, padded, bits, weights, carry, labels, squared):
    """:func:`floyd_steinberg_strip` for any channels, one value array per pixel."""
    height, width = pixels.shape[:2]
    channels = entries.shape[1]
    current = carry.copy()
    below = np.zeros((width, channels))
    value = np.empty(channels)
    for y in range(height):
        below[:] = 0.0
        for x in range(width):
            for c in range(channels):
                v = _pixel_value(pixels, y, x, c) + current[x, c]
                value[c] = min(max(v, 0.0), 255.0)
            index = _nearest_in_cell(value, _cell_of(value, bits), entries, starts, candidates, padded)
            labels[y, x] = index
            for c in range(pixels.shape[2]):
                difference = _pixel_value(pixels, y, x, c) - entries[index, c]
                squared[y] += difference * difference
            for c in range(channels):
                error = value[c] - entries[index, c]
                if x + 1 < width:
                    current[x + 1, c] += error * weights[0]
                if x > 0:
                    below[x - 1, c] += error * weights[1]
                below[x, c] += error * weights[2]
                if x + 1 < width:
                    below[x + 1, c] += error * weights[3]
        current, below = below, current
    carry[:] = current


@_compiled
def ordered_block(pixels, entries, starts, candidates, padded, bits, thresholds, top, left, labels):
    """Ordered dithering of the block ``pixels (h, w, C)`` uint8 whose first pixel is ``(top, left)`` of the
    image: ``thresholds (8, 8)`` float64 are the Bayer thresholds times level and spread; ``labels (h, w)``
    receives the palette indices."""
    height, width = pixels.shape[:2]
    channels = entries.shape[1]
    value = np.empty(channels)
    for y in range(height):
        for x in range(width):
            offset = thresholds[(top + y) % 8, (left + x) % 8]
            for c in range(channels):
                value[c] = min(max(_pixel_value(pixels, y, x, c) + offset, 0.0), 255.0)
            labels[y, x] = _nearest_in_cell(value, _cell_of(value, bits), entries, starts, candidates, padded)


@_compiled
def pixel_squared_error(pixels, labels, palette):
    """The sum over pixels and channels of ``(pixel - palette[label])^2`` (int64; transparent pixels as in the
    histogram)."""
    height, width, channels = pixels.shape
    total = 0
    for y in range(height):
        for x in range(width):
            for c in range(channels):
                sample = 0 if channels == 4 and pixels[y, x, 3] == 0 else np.int64(pixels[y, x, c])
                difference = sample - np.int64(palette[labels[y, x], c])
                total += difference * difference
    return total
