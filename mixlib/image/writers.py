"""Image outputs: palette PNG, tiled TIFF and Zarr writers, and the side-by-side comparison image."""

import base64
import struct
import zlib

import numpy as np

from ..core.errors import InputError
from ..core.storage import zarr_store
from .readers import TIFF_SUFFIXES

OUTPUT_SUFFIXES = (".png", ".tif", ".tiff", ".zarr", ".gif")
ANIMATION_SUFFIXES = (".png", ".gif")  # an animation's frames in one file: APNG or GIF
FRAME_FIELD = "{frame}"  # in an output path: one file per frame, numbered from 0 (frame_paths)
PNG_MAX_COLOURS = 256
PNG_MAX_PIXELS = 1 << 30  # a PNG is encoded in memory (encode_png); larger outputs go to .tif or .zarr
# Palette PNG encoding (encode_png): candidate layouts are deflated at PNG_LEVEL by libdeflate, whole up to
# PNG_TRIAL_PIXELS pixels (the smallest stream is the file's); a larger image's candidates are compared on a
# sample of PNG_TRIAL_PIXELS, and the smallest is deflated (up to PNG_STREAM_PIXELS pixels; beyond, by zlib at
# PNG_STREAM_LEVEL, strip by strip, so that memory stays bounded). benchmarks/png_size.py and benchmarks/batch.py
# measured the choice (docs/architecture.md, Inputs and outputs).
PNG_LEVEL = 6
PNG_STREAM_LEVEL = 6
PNG_TRIAL_PIXELS = 1 << 22
PNG_STREAM_PIXELS = 1 << 26
PNG_STRIP_PIXELS = 1 << 20  # rows are filtered this many pixels at a time
PNG_IDAT_BYTES = 1 << 24
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
COMPARE_SIDE = 1024  # each half of a comparison image fits in COMPARE_SIDE x COMPARE_SIDE
# Zarr outputs write every chunk, without Zarr's check for chunks equal to the fill value (1.5 s of the workers'
# time for the labels of a gigapixel; a chunk of palette entry 0 is as real as any other).
WRITE_EVERY_CHUNK = {"write_empty_chunks": True}


def check_png_size(out, height, width):
    """Refuse a PNG output too large to encode in memory."""
    if out.suffix.lower() == ".png" and height * width > PNG_MAX_PIXELS:
        raise InputError(f"{height}x{width} pixels is too large for a PNG (encoded in memory); write .tif or .zarr")


def thumbnail_step(height, width):
    """The stride that fits an image in COMPARE_SIDE x COMPARE_SIDE for a comparison image."""
    return max(1, -(-max(height, width) // COMPARE_SIDE))


def write_png(path, labels, palette, icc_profile=None, keep_order=False):
    """A palette (P-mode) PNG, encoded by :func:`encode_png` (with ``icc_profile``, an RGB colour profile, in an
    iCCP chunk).

    Parameters
    ----------
    path : str or path-like (a local path or a universal-pathlib path)
    labels : ndarray (H, W) uint8, palette indices
    palette : ndarray (k, 3|4) uint8, k <= 256; a fourth column is the alpha of each entry
    keep_order : bool, the PLTE chunk holds the palette in its order (:func:`encode_png`)
    """
    data = encode_png(labels, palette, icc_profile, keep_order)
    opener = path.open if hasattr(path, "open") else lambda mode: open(path, mode)
    with opener("wb") as file:
        file.write(data)


def encode_png(labels, palette, icc_profile=None, keep_order=False):
    """The bytes of a palette PNG of ``labels``, the smallest of a few candidate layouts.

    The candidates are the palette in its own order with unfiltered rows, and the palette sorted by luma with a
    filter chosen per row (minimum sum of absolute differences, as libpng's heuristic), each at 8 bits per pixel
    and, for k <= 16, packed 1, 2 or 4 bits per pixel. Each is deflated (libdeflate level ``PNG_LEVEL``), and
    the smallest stream is the file's; above ``PNG_TRIAL_PIXELS`` the candidates are compared on a sample of the
    rows and only the smallest is deflated whole (zlib in strips above ``PNG_STREAM_PIXELS``, to bound memory).
    The same inputs always give the
    same bytes, and the PNG decodes to exactly ``palette[labels]``: the palette may be reordered, the labels are
    remapped with it.

    Parameters
    ----------
    labels : ndarray (H, W) uint8, palette indices (all below k)
    palette : ndarray (k, 3|4) uint8, k <= 256
    icc_profile : bytes or None, an RGB ICC profile, written as an iCCP chunk
    keep_order : bool, only layouts that keep the palette in its order (a palette applied to many images, which
        must carry the same PLTE chunk)

    Returns
    -------
    bytes
    """
    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    palette = np.ascontiguousarray(palette, dtype=np.uint8)
    candidates = list(_png_layouts(labels, palette, keep_order))
    if labels.size <= PNG_TRIAL_PIXELS:  # the trials are the whole streams: keep the smallest
        best, stream = min(((layout, _deflate(layout)) for layout in candidates), key=lambda pair: len(pair[1]))
        return _png_file(best, stream, icc_profile)
    trial_rows = _trial_rows(*labels.shape)
    best = min(candidates, key=lambda layout: _trial_size(layout, trial_rows))
    return _png_file(best, _deflate(best), icc_profile)


class _Layout:
    """One way to lay a palette image out in PNG rows: a palette order (entry ``order[i]`` of the palette at index
    ``i``; the labels are remapped strip by strip), the row filter (0: none, or ``"minsum"``) and the bit depth."""

    def __init__(self, labels, palette, order, row_filter, depth):
        self.labels, self.palette, self.row_filter, self.depth = labels, palette[order], row_filter, depth
        self.new_index = np.empty(len(order), dtype=np.uint8)
        self.new_index[order] = np.arange(len(order))

    def scanlines(self, start, stop):
        """Rows ``start:stop`` as PNG scanlines ``(n, 1 + row bytes)``: a filter-type byte, then the filtered
        row (the row above ``start`` is the filters' prior row)."""
        first = max(start - 1, 0)
        packed = _pack_rows(self.new_index[self.labels[first:stop]], self.depth)
        prior = packed[0] if start > 0 else np.zeros_like(packed[0])
        return _filter_rows(packed[start - first:], prior, self.row_filter)


def _png_layouts(labels, palette, keep_order=False):
    """The candidate layouts: own order unfiltered, luma order with per-row filters, at 8 bits and packed; with
    ``keep_order``, the palette's order with and without the filters."""
    k = len(palette)
    depths = (8, _packed_depth(k)) if k <= 16 else (8,)
    if keep_order:
        orders = ((np.arange(k), 0), (np.arange(k), "minsum"))
    else:
        orders = ((_transparent_first(palette), 0), (_luma_order(palette), "minsum"))
    for order, row_filter in orders:
        for depth in depths:
            yield _Layout(labels, palette, order, row_filter, depth)


def _packed_depth(k):
    """The smallest PNG bit depth (1, 2, 4 or 8) that holds k palette indices."""
    return next(depth for depth in (1, 2, 4, 8) if k <= 1 << depth)


def _transparent_first(palette):
    """The palette order that keeps its own order but moves the entries that are not opaque to the front (the
    tRNS chunk then stops at the last of them)."""
    if palette.shape[1] == 3:
        return np.arange(len(palette))
    return np.argsort(palette[:, 3] == 255, kind="stable")


def _luma_order(palette):
    """Entries that are not opaque first (by alpha), then by luma (Rec. 601 weights), ties by index: similar
    colours get nearby indices, which the row filters can predict."""
    colours = palette.astype(np.int64)
    luma = colours[:, 0] * 299 + colours[:, 1] * 587 + colours[:, 2] * 114
    alpha = colours[:, 3] if palette.shape[1] == 4 else np.full(len(palette), 255)
    return np.lexsort((np.arange(len(palette)), luma, alpha))


def _pack_rows(rows, depth):
    """Rows of indices ``(n, W)`` as PNG row bytes ``(n, ceil(W * depth / 8))``, most significant bits first."""
    if depth == 8:
        return rows
    per_byte = 8 // depth
    height, width = rows.shape
    padded = np.zeros((height, -(-width // per_byte) * per_byte), dtype=np.uint8)
    padded[:, :width] = rows
    groups = padded.reshape(height, -1, per_byte)
    packed = np.zeros(groups.shape[:2], dtype=np.uint8)
    for i in range(per_byte):
        packed |= groups[:, :, i] << (8 - depth * (i + 1))
    return packed


def _filter_rows(rows, prior, row_filter):
    """PNG scanlines of row bytes ``rows (n, B)``: unfiltered (``row_filter`` 0), or each row with the filter
    (none, sub, up, average, Paeth) of least sum of absolute signed bytes (``"minsum"``). ``prior`` is the row
    above the first (zeros at the top of the image)."""
    if row_filter == 0:
        return np.column_stack([np.zeros(len(rows), dtype=np.uint8), rows])
    filtered = _all_filters(rows, prior)
    signed = filtered.view(np.int8).astype(np.int16)
    choice = np.abs(signed).sum(axis=2, dtype=np.int64).argmin(axis=0)
    return np.column_stack([choice.astype(np.uint8), filtered[choice, np.arange(len(rows))]])


def _all_filters(rows, prior):
    """The five PNG filters of every row (one byte per pixel unit): ``(5, n, B)`` uint8."""
    current = rows.astype(np.int16)
    up = np.vstack([prior[None].astype(np.int16), current[:-1]])
    left = np.zeros_like(current)
    left[:, 1:] = current[:, :-1]
    up_left = np.zeros_like(current)
    up_left[:, 1:] = up[:, :-1]
    estimate = left + up - up_left
    distance_left, distance_up, distance_up_left = (np.abs(estimate - v) for v in (left, up, up_left))
    paeth = np.where((distance_left <= distance_up) & (distance_left <= distance_up_left), left,
                     np.where(distance_up <= distance_up_left, up, up_left))
    predictions = (0, left, up, (left + up) >> 1, paeth)
    return np.stack([(current - p).astype(np.uint8) for p in predictions])


def _row_strips(height, width):
    """Row ranges ``(start, stop)`` of about ``PNG_STRIP_PIXELS`` pixels each, covering the image."""
    step = max(1, PNG_STRIP_PIXELS // max(width, 1))
    return [(start, min(start + step, height)) for start in range(0, height, step)]


def _trial_rows(height, width):
    """The row ranges a trial compresses: every row up to ``PNG_TRIAL_PIXELS`` pixels, else evenly spaced strips
    of that many pixels in all."""
    strips = _row_strips(height, width)
    wanted = -(-PNG_TRIAL_PIXELS // PNG_STRIP_PIXELS)
    if len(strips) <= wanted:
        return strips
    return [strips[i] for i in np.linspace(0, len(strips) - 1, wanted).round().astype(int)]


def _trial_size(layout, rows):
    """Bytes of a fast deflate of ``layout``'s scanlines in ``rows`` (the candidates' palette chunks are the same
    size: every palette order puts the entries that are not opaque first)."""
    import deflate

    data = b"".join(layout.scanlines(start, stop).tobytes() for start, stop in rows)
    return len(deflate.zlib_compress(data, PNG_LEVEL))


def _deflate(layout):
    """The zlib stream of ``layout``'s scanlines: libdeflate in one piece, or zlib strip by strip for large
    images (bounded memory)."""
    height, width = layout.labels.shape
    strips = _row_strips(height, width)
    if height * width <= PNG_STREAM_PIXELS:
        import deflate

        whole = np.concatenate([layout.scanlines(start, stop) for start, stop in strips])
        return deflate.zlib_compress(whole, PNG_LEVEL)
    stream = zlib.compressobj(PNG_STREAM_LEVEL)
    parts = [stream.compress(layout.scanlines(start, stop)) for start, stop in strips]
    return b"".join(parts) + stream.flush()


def _png_file(layout, compressed, icc_profile=None):
    """The PNG file: signature, IHDR, iCCP (with a profile), PLTE, tRNS (when some entry is not opaque), IDAT
    chunks, IEND."""
    height, width = layout.labels.shape
    palette = layout.palette
    chunks = [_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, layout.depth, 3, 0, 0, 0))]
    if icc_profile is not None:  # name, NUL, compression method 0 (deflate), the compressed profile
        chunks.append(_chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(icc_profile, 9)))
    chunks.append(_chunk(b"PLTE", palette[:, :3].tobytes()))
    if palette.shape[1] == 4 and (palette[:, 3] != 255).any():
        last = np.flatnonzero(palette[:, 3] != 255)[-1]
        chunks.append(_chunk(b"tRNS", palette[:last + 1, 3].tobytes()))
    chunks += [_chunk(b"IDAT", compressed[i:i + PNG_IDAT_BYTES])
               for i in range(0, max(len(compressed), 1), PNG_IDAT_BYTES)]
    chunks.append(_chunk(b"IEND", b""))
    return PNG_SIGNATURE + b"".join(chunks)


def _chunk(kind, data):
    """One PNG chunk: length, type, data, CRC-32 of type and data."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_animation(path, frames, palette, durations=None, loop=None, icc_profile=None):
    """An animation whose every frame carries ``palette``: an APNG (``.png``) or a GIF (``.gif``), by Pillow.

    Parameters
    ----------
    path : Path or UPath
    frames : list of ndarray (H, W) uint8, each frame's palette indices
    palette : ndarray (k, 3|4) uint8, k <= 256; a fourth column is each entry's alpha. A GIF has one transparent
        index and no partial alpha: its entries' alpha must be 0 or 255, and at most one entry 0 (InputError)
    durations : list of int or None, milliseconds per frame (a GIF keeps them to 10 ms)
    loop : int or None, the loop count (0: forever); None: Pillow's default (an APNG loops forever, a GIF plays
        once)
    icc_profile : bytes or None, an RGB colour profile for the APNG
    """
    import io

    images = [_palette_image(labels, palette[:, :3]) for labels in frames]
    options = {"save_all": True, "append_images": images[1:]}
    if durations is not None:
        options["duration"] = list(durations)
    if loop is not None:
        options["loop"] = loop
    transparency = None
    if palette.shape[1] == 4:
        transparency = _gif_transparency(palette) if path.suffix.lower() == ".gif" else palette[:, 3].tobytes()
    if transparency is not None:
        options["transparency"] = transparency
    if path.suffix.lower() == ".gif":  # every frame whole, over the last, with the one global colour table
        options.update(optimize=False, disposal=1, palette=palette[:, :3].tobytes())
    elif icc_profile is not None:
        options["icc_profile"] = icc_profile
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF" if path.suffix.lower() == ".gif" else "PNG", **options)
    opener = path.open if hasattr(path, "open") else lambda mode: open(path, mode)
    with opener("wb") as file:
        file.write(buffer.getvalue())


def check_animation_output(out, frames, name):
    """Refuse an output without FRAME_FIELD that cannot hold ``frames`` (a Frames of input ``name``): several
    frames need an APNG or GIF, and frames of one size."""
    if FRAME_FIELD in str(out) or len(frames.pixels) == 1:
        return
    if out.suffix.lower() not in ANIMATION_SUFFIXES:
        raise InputError(f"input {name} has {len(frames.pixels)} frames and a {out.suffix} output holds one image: "
                         f"write .png (APNG) or .gif, or put {FRAME_FIELD} in --out for a file per frame")
    if not frames.same_size:
        raise InputError(f"the pages of {name} differ in size and cannot be one animation: put {FRAME_FIELD} in "
                         "--out for a file per page")


def check_gif_alpha(path, frames):
    """Refuse, before any fit, a GIF output of frames ``(H, W, 4)`` with partly transparent pixels, which a GIF
    cannot show (its palette may still mix transparent and opaque colours into one entry:
    :func:`_gif_transparency` says so after the fit)."""
    if path.suffix.lower() != ".gif":
        return
    for pixels in frames:
        if pixels.shape[2] == 4 and np.any((pixels[..., 3] != 0) & (pixels[..., 3] != 255)):
            raise InputError(f"the input has partly transparent pixels, which a GIF ({path.name}) cannot hold; write "
                             ".png instead")


def frame_paths(path, count):
    """The output of every frame of ``count``: ``path`` (a Path or UPath) with FRAME_FIELD replaced by the frame's
    number from 0, zero-padded to one width (``0..9``, ``00..11``) so that the files sort in order."""
    width = len(str(count - 1))
    return [type(path)(str(path).replace(FRAME_FIELD, f"{number:0{width}d}")) for number in range(count)]


def _palette_image(labels, colours):
    """A Pillow 'P' image of ``labels (H, W)`` with ``colours (k, 3)`` as its palette."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint8), mode="P")
    image.putpalette(colours.ravel().tolist())
    return image


def _gif_transparency(palette):
    """The GIF transparent index of an RGBA palette (the entry of alpha 0), or InputError for what a GIF cannot
    hold."""
    alpha = palette[:, 3]
    if np.any((alpha != 0) & (alpha != 255)) or np.count_nonzero(alpha == 0) > 1:
        raise InputError("a GIF has one fully transparent colour and no partial transparency, and this palette has "
                         f"{np.count_nonzero((alpha != 0) & (alpha != 255))} partly transparent entries and "
                         f"{np.count_nonzero(alpha == 0)} transparent ones; write .png (APNG) instead")
    return int(np.argmin(alpha)) if np.any(alpha == 0) else None


def write_labels(path, labels, palette, *, tile, attributes, icc_profile, client_compute=None, keep_order=False,
                 also=()):
    """Write palette indices in the format the output's suffix names: a palette PNG, a tiled TIFF, a Zarr group or
    a GIF (of at most 256 colours).

    Parameters
    ----------
    path : Path (or UPath for Zarr), the (temporary) output
    labels : dask.array.Array (H, W) uint8 or uint16, palette indices; or an ndarray, written by this process
    palette : ndarray (k, 3|4) uint8
    tile : int, TIFF tile and Zarr chunk side
    attributes : dict, JSON attributes of a Zarr output
    icc_profile : bytes or None, the input's RGB colour profile: embedded in a PNG or TIFF, kept (base64) in a Zarr
        group's attributes
    client_compute : callable(list of dask collections) -> list of results; unused for ndarray labels
    keep_order : bool, a PNG's PLTE chunk holds the palette in its order (:func:`encode_png`)
    also : list of dask collections computed with a Zarr output's labels, in the same graph (so that what they share
        with the labels is computed once); other outputs take none

    Returns
    -------
    list, the values of ``also``
    """
    suffix = path.suffix.lower()
    if also and suffix != ".zarr":
        raise ValueError("only a Zarr output computes other collections with its labels")
    if suffix == ".gif":
        write_animation(path, [labels if isinstance(labels, np.ndarray) else client_compute([labels])[0]], palette)
        return []
    if isinstance(labels, np.ndarray):
        if suffix == ".png":
            write_png(path, labels, palette, icc_profile, keep_order)
            return []
        import dask
        import dask.array as da
        import dask.local

        labels = da.from_array(labels, chunks=tile)

        def client_compute(parts):  # the scheduler itself: its name would make Dask look for distributed
            return list(dask.compute(*parts, scheduler=dask.local.get_sync))

    if suffix == ".png":
        write_png(path, client_compute([labels])[0], palette, icc_profile, keep_order)
    elif suffix in TIFF_SUFFIXES:
        write_tiff(path, labels, palette, tile, client_compute, icc_profile)
    else:
        if icc_profile is not None:
            attributes = {**attributes, "icc_profile": base64.b64encode(icc_profile).decode("ascii")}
        return write_zarr(path, labels, palette, tile, attributes, client_compute, also)
    return []


def write_tiff(path, labels, palette, tile, client_compute, icc_profile=None):
    """A tiled TIFF: palette colour (8-bit indices and a colormap) for RGB with at most 256 colours, else the
    pixels' colours, RGB or RGBA (a TIFF colormap has no alpha, and 16-bit palette TIFFs are not read by Pillow and
    most viewers).

    Parameters
    ----------
    labels : dask.array.Array (H, W) uint8 or uint16, palette indices
    palette : ndarray (k, 3|4) uint8
    tile : int, tile side (a multiple of 16)
    client_compute : callable(list of dask arrays) -> list of ndarrays, computes a batch of strips
    icc_profile : bytes or None, an RGB colour profile to embed
    """
    channels = palette.shape[1]
    profile = {} if icc_profile is None else {"iccprofile": icc_profile}
    if channels == 3 and len(palette) <= PNG_MAX_COLOURS:
        colormap = np.zeros((3, 256), dtype=np.uint16)
        colormap[:, :len(palette)] = palette.T.astype(np.uint16) * 257
        write_tiled_tiff(path, labels.astype(np.uint8), tile, client_compute, photometric="palette",
                         colormap=colormap, **profile)
        return
    colours = labels.map_blocks(lambda block: palette[block], new_axis=2, chunks=labels.chunks + ((channels,),),
                                dtype=np.uint8, token="palette-colours")
    extra = {"extrasamples": ["unassalpha"]} if channels == 4 else {}
    write_tiled_tiff(path, colours, tile, client_compute, photometric="rgb", **extra, **profile)


def write_tiled_tiff(path, image, tile, client_compute, **options):
    """A tiled, zlib-compressed TIFF of ``image`` (dask, (H, W) or (H, W, C)), computed a few strips of
    ``tile`` rows at a time and streamed to tifffile tile by tile (``options`` go to ``tifffile.imwrite``)."""
    import tifffile

    strips = image.rechunk({0: tile, 1: -1})
    tifffile.imwrite(path, _tiles(strips, tile, client_compute), shape=image.shape, dtype=image.dtype,
                     tile=(tile, tile), compression="zlib", **options)


def _tiles(strips, tile, client_compute, strips_at_once=4):
    """Yield full-size tiles row by row, computing a few strips at a time."""
    blocks = [strips.blocks[i] for i in range(strips.numblocks[0])]
    for start in range(0, len(blocks), strips_at_once):
        for strip in client_compute(blocks[start:start + strips_at_once]):
            for col in range(0, strip.shape[1], tile):
                piece = strip[:, col:col + tile]
                padded = np.zeros((tile, tile) + strip.shape[2:], dtype=strip.dtype)
                padded[:piece.shape[0], :piece.shape[1]] = piece
                yield padded


def write_pixels(path, image, tile, client_compute):
    """An RGB(A) image ``(H, W, C)`` uint8 (dask) as PNG (in memory), tiled TIFF, or a Zarr array with
    ``tile x tile`` chunks written in parallel (which ``jobs.compress`` reads back as input)."""
    import dask.array as da
    import zarr
    from PIL import Image

    suffix = path.suffix.lower()
    if suffix == ".png":
        Image.fromarray(client_compute([image])[0]).save(path, format="PNG")
    elif suffix in TIFF_SUFFIXES:
        extra = {"extrasamples": ["unassalpha"]} if image.shape[2] == 4 else {}
        write_tiled_tiff(path, image, tile, client_compute, photometric="rgb", **extra)
    else:
        target = zarr.create_array(zarr_store(path), shape=image.shape, dtype=np.uint8,
                                   chunks=(tile, tile, image.shape[2]), config=WRITE_EVERY_CHUNK)
        client_compute([da.store(image.rechunk((tile, tile, image.shape[2])), target, lock=False, compute=False)])


def write_zarr(path, labels, palette, tile, attributes, client_compute, also=()):
    """A Zarr group with ``labels (H, W)`` in ``tile x tile`` chunks and ``palette (k, C)``, the labels
    written chunk by chunk in parallel by the workers (Dask chunks aligned to the Zarr chunks).

    Parameters
    ----------
    labels : dask.array.Array (H, W) uint8 or uint16
    palette : ndarray (k, 3|4) uint8
    attributes : dict, JSON-serialisable group attributes
    client_compute : callable(list of dask collections) -> list of results, computes on the cluster
    also : list of dask collections computed in the same graph as the labels: their values are returned
    """
    import dask.array as da
    import zarr

    group = zarr.open_group(zarr_store(path), mode="w")
    group.attrs.update(attributes)
    target = group.create_array("labels", shape=labels.shape, dtype=labels.dtype, chunks=(tile, tile),
                                config=WRITE_EVERY_CHUNK)
    group.create_array("palette", data=palette)
    return client_compute([da.store(labels.rechunk((tile, tile)), target, lock=False, compute=False),
                           *also])[1:]


def side_by_side(original, compressed, titles, max_width=2048):
    """The original and the compressed image side by side with a title over each (seed's compare_images).

    Parameters
    ----------
    original, compressed : ndarray (h, w, C) uint8, already downscaled to at most ``max_width / 2`` wide
    titles : (str, str)

    Returns
    -------
    PIL.Image.Image, RGB or RGBA
    """
    from PIL import Image, ImageDraw, ImageFont

    height, width = original.shape[:2]
    mode = "RGBA" if original.shape[2] == 4 else "RGB"
    gap, band = 16, max(24, width // 24)
    canvas = Image.new(mode, (2 * width + 3 * gap, height + band + 2 * gap), "white")
    font = ImageFont.load_default(size=max(12, band * 2 // 3))
    draw = ImageDraw.Draw(canvas)
    for i, (pixels, title) in enumerate(zip((original, compressed), titles)):
        left = gap + i * (width + gap)
        canvas.paste(Image.fromarray(pixels), (left, gap + band))
        draw.text((left + width // 2, gap + band // 2), title, fill="black", font=font, anchor="mm")
    return canvas
