"""The colour histogram: the distinct colours of an 8-bit image with their pixel counts.

Lloyd's algorithm and EM see a pixel only through its colour, so the distinct colours weighted by
their counts are an exact summary of an image, however many pixels it has. A colour is packed into
one uint32 *code*: ``r<<16 | g<<8 | b`` for RGB, ``r<<24 | g<<16 | b<<8 | a`` for RGBA, where every
fully transparent pixel gets code 0 so that they all share one palette entry.
"""

import numpy as np

from ..core.reduce import tree_reduce

RGB_CODES = 1 << 24


def colour_codes(block):
    """Pack pixels into colour codes (see :func:`mixlib.image.compiled.colour_codes`).

    Parameters
    ----------
    block : ndarray (..., C) uint8, C = 3 (RGB) or 4 (RGBA)

    Returns
    -------
    ndarray (...) uint32
    """
    from .loops import colour_codes as packed

    return packed(_as_rows(block)).reshape(block.shape[:-1])


def _as_rows(block):
    """A pixel block ``(..., C)`` as the ``(h, w, C)`` uint8 array of the compiled loops (a view when it can)."""
    block = np.asarray(block, dtype=np.uint8)
    return block if block.ndim == 3 else block.reshape(-1, 1, block.shape[-1])


def decode_colours(codes, channels):
    """Unpack colour codes ``(M,)`` uint32 into colours ``(M, channels)`` uint8."""
    shifts = 8 * np.arange(channels - 1, -1, -1, dtype=np.uint32)
    return ((codes[:, None] >> shifts) & 0xFF).astype(np.uint8)


def histogram_chunk(block):
    """Distinct colour codes of one image block, sorted, with their pixel counts (int64)."""
    from .loops import code_counts

    codes, counts = code_counts(colour_codes(block).ravel())
    return {"codes": codes, "counts": counts}


def merge_histograms(parts):
    """Merge histograms ``{"codes", "counts"}``: the union of the (sorted) codes, counts added.

    Parts are merged two by two, as a balanced tree (``O(n log p)`` for p parts of n codes in all). On a
    gigapixel image this took 0.5 s of the workers' time instead of 9 s for adding into dense 2^24 tables.
    """
    from .loops import merge_counts

    parts = [(p["codes"], p["counts"]) for p in parts]
    while len(parts) > 1:
        unpaired = parts[-1:] if len(parts) % 2 else []
        parts = [merge_counts(*parts[i], *parts[i + 1]) for i in range(0, len(parts) - 1, 2)] + unpaired
    codes, counts = parts[0]
    return {"codes": codes, "counts": counts}


def image_histogram(pixels, chunk_size):
    """The exact colour histogram of an image in this process (one task of a batch): the same codes and counts as
    :func:`colour_histogram` gives on the cluster, from blocks of ``chunk_size x chunk_size`` pixels.

    Parameters
    ----------
    pixels : ndarray (H, W, C) uint8

    Returns
    -------
    dict ``{"codes": (M,) uint32 sorted, "counts": (M,) int64}``
    """
    height, width = pixels.shape[:2]
    return merge_histograms([histogram_chunk(pixels[top:top + chunk_size, left:left + chunk_size])
                             for top in range(0, height, chunk_size) for left in range(0, width, chunk_size)])


def colour_histogram(image, split_every=8):
    """Lazy tree-reduced colour histogram of an image.

    Parameters
    ----------
    image : dask.array.Array (H, W, C) uint8, chunked along H and W only

    Returns
    -------
    dask.array.Array () object; computes to ``{"codes": (M,) uint32 sorted, "counts": (M,) int64}``
    """
    return tree_reduce(image, histogram_chunk, merge_histograms, name="colour-histogram",
                       split_every=split_every)


CHUNKS_PER_SAVED_BLOCK = (2, 4)  # chunks (rows, cols) whose merged histogram is saved as one Zarr group


def saved_block_shape(chunk_shape):
    """Pixels (rows, cols) of the blocks whose histograms a checkpoint keeps: 2 x 4 chunks. Zarr's overhead per
    group is what a checkpoint costs: on the 1-gigapixel image (256 chunks, two threaded workers) the histogram pass
    took 12.6 s without a checkpoint, 27.6 s saving every chunk's histogram and 16.5 s saving 32 blocks'."""
    return tuple(c * n for c, n in zip(chunk_shape, CHUNKS_PER_SAVED_BLOCK))


def checkpointed_histogram(source, chunk_shape, checkpoint):
    """Lazy tree-reduced colour histogram of a Zarr or TIFF image whose block histograms are kept in a checkpoint.

    A block is :func:`saved_block_shape` pixels. Each block's task returns the histogram saved under the key
    ``r{row}-c{col}`` when a complete one is there (the block is not even read); otherwise it reads the block
    chunk by chunk, merges the chunks' histograms and saves the result crash-safely before returning it. A job
    killed during the pass and run again computes only the blocks that had not finished. The merged histogram does
    not depend on which blocks came from the checkpoint: the counts are integers.

    Parameters
    ----------
    source : mixlib.image.readers.ImageSource of kind 'zarr' or 'tiff'
    chunk_shape : (rows, cols) of the chunks read at once
    checkpoint : mixlib.core.checkpoint.BlockCheckpoint, started, in a folder the workers share with the client

    Returns
    -------
    dask.array.Array () object, as :func:`colour_histogram`
    """
    import dask.array as da

    grid = da.empty(source.shape[:2], dtype=np.uint8, chunks=saved_block_shape(chunk_shape))
    parts = grid.map_blocks(_saved_block_histogram, source.kind, source.path, checkpoint, chunk_shape,
                            dtype=object, meta=np.empty((0, 0), dtype=object), chunks=(1, 1),
                            token="colour-histogram-block")
    return tree_reduce(parts, _unboxed, merge_histograms, name="colour-histogram")


def _saved_block_histogram(block, kind, path, checkpoint, chunk_shape, block_info=None):
    """One block's histogram, from the checkpoint when saved there, else computed and saved; boxed ``(1, 1)``."""
    from .readers import read_region

    (r0, r1), (c0, c1) = block_info[0]["array-location"]  # the image block (the output block is 1 x 1)
    key = f"r{r0}-c{c0}"
    saved = checkpoint.load(key)
    if saved is not None:
        histogram = {"codes": saved[0]["codes"], "counts": saved[0]["counts"]}
    else:
        rows, cols = chunk_shape
        histogram = merge_histograms([histogram_chunk(read_region(kind, path, top, min(top + rows, r1), left,
                                                                  min(left + cols, c1)))
                                      for top in range(r0, r1, rows) for left in range(c0, c1, cols)])
        checkpoint.save(key, histogram)
    box = np.empty((1, 1), dtype=object)
    box[0, 0] = histogram
    return box


def _unboxed(block):
    return block.flat[0]


class ColourLookup:
    """Maps colour codes to palette indices.

    RGB uses a dense table of 2**24 entries (one gather per pixel); RGBA codes span 2**32 values and use
    a binary search in the sorted distinct codes instead, within the codes that share the pixel's high 16 bits
    (:func:`mixlib.image.compiled.bucketed_lookup`).

    Parameters
    ----------
    codes : ndarray (M,) uint32, sorted distinct codes of the image
    labels : ndarray (M,) uint8 or uint16, the palette index of each code
    channels : int, 3 or 4
    """

    def __init__(self, codes, labels, channels):
        self.channels = channels
        if channels == 3:
            self.table = np.zeros(RGB_CODES, dtype=labels.dtype)
            self.table[codes] = labels
            self.codes = self.starts = None
        else:
            self.table = labels
            self.codes = codes
            self.starts = np.searchsorted(codes, np.arange((1 << 16) + 1, dtype=np.int64) << 16)

    def __call__(self, block):
        """Palette indices ``(h, w)`` of an image block ``(h, w, C)`` uint8."""
        from .loops import bucketed_lookup, rgb_lookup

        if self.codes is None:
            return rgb_lookup(_as_rows(block), self.table).reshape(block.shape[:-1])
        return bucketed_lookup(_as_rows(block), self.codes, self.starts, self.table).reshape(block.shape[:-1])
