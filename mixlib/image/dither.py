"""Dithering: each pixel mapped to the nearest palette entry of its colour plus a
correction that spreads the quantisation error, instead of the nearest entry of its own colour.

Floyd-Steinberg, in raster order. Pixel ``(y, x)`` takes the value ``v = clip(p(y, x) + e(y, x), 0, 255)`` per
channel, where ``e`` is the error carried to it, and the entry ``q`` nearest to ``v`` (squared Euclidean distance;
of equal distances the lowest index). Its error ``d = v - q`` is carried on with the weights ``level * (7, 3, 5,
1) / 16`` to ``(y, x+1)``, ``(y+1, x-1)``, ``(y+1, x)`` and ``(y+1, x+1)`` (those inside the image), added in
raster order of the pixels that carry them, in float64. A strip of rows is dithered given the error carried into
its first row (``carry``, the previous strip's last) and returns the error carried out of its last row, so strips
dithered in order give the image dithered whole, bit for bit.

Ordered (Bayer): pixel ``(y, x)`` takes ``v = clip(p + level * spread * t(y mod 8, x mod 8), 0, 255)`` on every
channel, ``t`` the 8x8 Bayer matrix's thresholds ``(m + 1/2) / 64 - 1/2`` and ``spread`` half the palette's
median distance from an entry to its nearest other one (a fitted palette is denser where the image has more
pixels, and the whole median pushed the colours of sparse regions to far entries); pixels depend on their
position only, so blocks are dithered apart, given their first row and column in the image.

RGBA pixels are dithered on their four channels; fully transparent pixels count as ``(0, 0, 0, 0)``, as in the
colour histogram. The functions here work on one strip or block, through the compiled loops of
:mod:`mixlib.image.dither_loops` (imported on first use: numba's import is a fixed cost of every job); the Dask
graphs that run them are in :mod:`mixlib.image.compress`.
"""

import threading

import numpy as np

DITHER_METHODS = ("none", "floyd-steinberg", "ordered")
THREADS = 2  # of a Floyd-Steinberg strip (_wavefront): a batch's tasks, one image each, take 1
GROUP_ROWS = 32  # rows of a piece of the Floyd-Steinberg wavefront (_wavefront)
PIECES_PER_THREAD = 2  # pieces of a group of rows per thread (_wavefront)
WAVE_WIDTH = 4 * GROUP_ROWS  # columns of a piece at least (wider than its slant of 2 * GROUP_ROWS)
FS_WEIGHTS = np.array([7.0, 3.0, 5.0, 1.0]) / 16.0  # right, below left, below, below right

BAYER_8 = np.array([[0, 32, 8, 40, 2, 34, 10, 42],
                    [48, 16, 56, 24, 50, 18, 58, 26],
                    [12, 44, 4, 36, 14, 46, 6, 38],
                    [60, 28, 52, 20, 62, 30, 54, 22],
                    [3, 35, 11, 43, 1, 33, 9, 41],
                    [51, 19, 59, 27, 49, 17, 57, 25],
                    [15, 47, 7, 39, 13, 45, 5, 37],
                    [63, 31, 55, 23, 61, 29, 53, 21]])
BAYER_THRESHOLDS = (BAYER_8 + 0.5) / 64.0 - 0.5


class NearestSearch:
    """A palette arranged for an exact nearest-entry search: the colour cube is cut into cells (``2^bits`` per
    channel), and each cell lists the entries that can be nearest to a point in it, those whose least distance to
    the cell is at most the least, over entries, of the greatest distance to it
(:func:`mixlib.image.dither_loops.cell_candidates`). A value
    is compared with its cell's candidates only (most cells have one or two).

    Parameters
    ----------
    palette : ndarray (k, C) uint8
    """

    def __init__(self, palette):
        from .dither_loops import cell_candidates

        palette = np.ascontiguousarray(palette)
        channels = palette.shape[1]
        self.bits = (5 if len(palette) <= 4096 else 4) if channels == 3 else 4
        self.entries = palette.astype(np.float64)
        self.starts, self.candidates, self.padded = cell_candidates(self.entries, self.bits)

    def arguments(self):
        """The arrays the kernels take: ``(entries (k, C) float64, starts, candidates, padded, bits)``."""
        return self.entries, self.starts, self.candidates, self.padded, np.int64(self.bits)


def label_dtype(palette):
    """The dtype of palette indices: uint8 up to 256 entries, else uint16."""
    return np.uint8 if len(palette) <= 256 else np.uint16


def dither_strip(pixels, palette, level, carry=None, threads=1, search=None):
    """Floyd-Steinberg of whole image rows ``pixels (h, W, C)`` uint8 to ``palette (k, C')`` uint8 (C' = C, or 4:
    an RGB image is opaque) given the error ``carry (W, C')`` float64 carried into the first row (None: the image's
    first rows): ``(labels (h, W), carry out (W, C'), squared error)``, the squared error (an int) being
    :func:`squared_error_of` the strip and its labels, summed in the loop as it chooses them. ``threads`` > 1: RGB
    strips wide enough are dithered by :func:`_wavefront` on that many threads, to the same labels. ``search``: the
    palette's :class:`NearestSearch` when the caller has it (for many strips or frames: it takes a second to build
    for thousands of entries)."""
    from .dither_loops import floyd_steinberg_strip

    palette = np.asarray(palette)
    search = NearestSearch(palette) if search is None else search
    carry = np.zeros((pixels.shape[1], palette.shape[1]), np.float64) if carry is None else carry.copy()
    labels, squared = np.empty(pixels.shape[:2], label_dtype(palette)), np.zeros(len(pixels))
    pixels, weights = np.ascontiguousarray(pixels), FS_WEIGHTS * float(level)
    if threads > 1 and pixels.shape[2] == palette.shape[1] == 3 and pixels.shape[1] >= 2 * threads * WAVE_WIDTH:
        carry = _wavefront(pixels, search, weights, carry, labels, squared, threads)
    else:
        floyd_steinberg_strip(pixels, *search.arguments(), weights, carry, labels, squared)
    return labels, carry, int(squared.sum())


def _wavefront(pixels, search, weights, carry, labels, squared, threads):
    """Floyd-Steinberg of an RGB strip on ``threads`` threads; the carry out (W, 3).

    The strip is cut into groups of GROUP_ROWS rows and each group into ``PIECES_PER_THREAD * threads`` slanted pieces
    side by side (:func:`~mixlib.image.dither_loops.floyd_steinberg_rgb_piece`). Piece ``c`` of group ``g`` needs what
    its left neighbour ``(g, c - 1)`` and the pieces above it, ``(g - 1, c)`` and ``(g - 1, c + 1)``, carry to it (the
    slant of two columns a row keeps a piece's own rows within its reach); a piece starts on one of the threads as soon
    as those are done, so a thread held up elsewhere (by the other tasks of a worker, on shared cores) holds back only
    the pieces that wait for its own. Pieces running together touch other columns of the error rows (a piece is far
    wider than its slant, ``2 * GROUP_ROWS`` columns), and each error sum is added in raster order: the labels are those
    of one thread. A group's first piece waits, through the pieces above it and to their right, for the last piece of
    the group ``pieces - 1`` above: at most that many groups are under way, and their error rows fit in the buffer.
    """
    import queue

    from .dither_loops import floyd_steinberg_rgb_piece

    height, width = pixels.shape[:2]
    pieces = PIECES_PER_THREAD * threads
    width_each = -(-width // pieces)
    groups = -(-height // GROUP_ROWS)
    errors = np.zeros(((pieces - 1) * GROUP_ROWS + 1, width + 2, 3))  # the rows of the groups under way, and below
    errors[0, 1:width + 1] = carry
    arguments = (pixels, *search.arguments(), weights, errors, labels, squared)
    waiting = {(g, c): (c > 0) + (g > 0) * (1 + (c + 1 < pieces)) for g in range(groups) for c in range(pieces)}
    ready, lock, failures = queue.SimpleQueue(), threading.Lock(), []
    ready.put((0, 0))

    def work():
        while (group_piece := ready.get()) is not None:
            group, piece = group_piece
            try:
                top = group * GROUP_ROWS
                floyd_steinberg_rgb_piece(*arguments, top, min(GROUP_ROWS, height - top), piece, pieces, width_each)
            except BaseException as error:  # raised again in the caller's thread
                failures.append(error)
                for _ in range(threads):
                    ready.put(None)
                return
            with lock:
                del waiting[group_piece]
                for after in ((group, piece + 1), (group + 1, piece), (group + 1, piece - 1)):
                    if after in waiting:
                        waiting[after] -= 1
                        if waiting[after] == 0:
                            ready.put(after)
                if not waiting:
                    for _ in range(threads):
                        ready.put(None)

    workers = [threading.Thread(target=work, name=f"dither-{i}") for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if failures:
        raise failures[0]
    return errors[height % len(errors), 1:width + 1].copy()


def dither_row_of_chunks(chunks, palette, level, carry=None, search=None):
    """One link of a chunked image's Floyd-Steinberg chain: the chunks ``(h, w_j, C)`` of one row of chunks (whole
    image rows, left to right) and the error ``carry (W, C')`` float64 the row above carried out (None for the
    first): ``(labels (h, W), carry out, squared error)``, on THREADS threads; ``search``: :func:`dither_strip`'s."""
    pixels = chunks[0] if len(chunks) == 1 else np.concatenate(chunks, axis=1)
    return dither_strip(pixels, palette, level, carry, THREADS, search)


def ordered_spread(palette):
    """The amplitude of the ordered thresholds at level 1: half the median Euclidean distance from an entry of
    ``palette (k, C)`` to its nearest other entry (0 for one entry)."""
    entries = np.asarray(palette, np.float64)
    if len(entries) < 2:
        return 0.0
    distances = np.sqrt(((entries[:, None, :] - entries[None, :, :]) ** 2).sum(axis=2))
    np.fill_diagonal(distances, np.inf)
    return float(np.median(distances.min(axis=1))) / 2


def ordered_thresholds(palette, level):
    """The 8x8 offsets added to every channel: Bayer thresholds times ``level`` and :func:`ordered_spread`."""
    return BAYER_THRESHOLDS * (float(level) * ordered_spread(palette))


def dither_block(pixels, palette, thresholds, top=0, left=0, search=None):
    """Ordered dithering of the block ``pixels (h, w, C)`` uint8 at ``(top, left)`` of the image with the offsets
    ``thresholds (8, 8)`` (:func:`ordered_thresholds`): labels ``(h, w)``; ``search``: :func:`dither_strip`'s."""
    from .dither_loops import ordered_block

    search = NearestSearch(palette) if search is None else search
    labels = np.empty(pixels.shape[:2], label_dtype(palette))
    ordered_block(np.ascontiguousarray(pixels), *search.arguments(), np.asarray(thresholds, np.float64), int(top),
                  int(left), labels)
    return labels


def dithered(pixels, palette, method, level, threads=THREADS, search=None):
    """The whole image ``pixels (H, W, C)`` uint8 in memory dithered by ``method`` (``DITHER_METHODS`` but 'none') at
    ``level`` in 0..1 (Floyd-Steinberg on ``threads``; ``search``: :func:`dither_strip`'s): ``(labels (H, W),
    squared error)``, the error (an int) :func:`squared_error_of` the image and its labels (Floyd-Steinberg's summed
    as it chooses them)."""
    if method == "floyd-steinberg":
        labels, _, error = dither_strip(pixels, palette, level, threads=threads, search=search)
        return labels, error
    labels = dither_block(pixels, palette, ordered_thresholds(palette, level), search=search)
    return labels, squared_error_of(pixels, labels, palette)


def squared_error_of(pixels, labels, palette):
    """The sum over the pixels ``(H, W, C)`` and their channels of the squared differences from their entries of
    ``palette`` given by ``labels (H, W)`` (an int; fully transparent pixels as (0, 0, 0, 0))."""
    from .dither_loops import pixel_squared_error

    return int(pixel_squared_error(np.ascontiguousarray(pixels), np.ascontiguousarray(labels), np.asarray(palette)))


def warm_up():
    """Load every compiled loop of :mod:`mixlib.image.dither_loops` (from the cache, or compile it)."""
    pixels, palette = np.zeros((1, 2, 3), np.uint8), np.zeros((2, 3), np.uint8)
    dither_strip(pixels, palette, 1.0)
    dither_block(pixels, palette, np.zeros((8, 8)))
    squared_error_of(pixels, np.zeros((1, 2), np.uint8), palette)
