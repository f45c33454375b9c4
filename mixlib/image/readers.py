"""Image inputs: check an input before the cluster starts, then open it as a Dask array.

Opening is two steps so that a job can check its input before it starts a cluster: :func:`inspect_image`
reads what it needs to reject a bad file (for a Pillow image that is the decoded pixels, for Zarr and
TIFF only their metadata), and :meth:`ImageSource.to_dask` builds the lazy array on the cluster.

Every input becomes ``(H, W, 3|4)`` uint8 as a viewer shows it: grey is repeated into RGB, 16-bit and 32-bit
samples are scaled from their full range (``round(v * 255 / (2**bits - 1))``), floating-point samples from 0..1,
and the EXIF (or TIFF) orientation is applied. An animation or a multi-page file is inspected by its first frame;
:func:`read_frames` decodes every frame.
"""

import contextlib
import dataclasses
import functools
import importlib.util
import logging
import struct
from pathlib import Path

import numpy as np

from ..core.errors import InputError
from ..core.storage import is_local, location, tree_bytes, zarr_store

SAMPLE_PREFIX = "sample:"
TIFF_SUFFIXES = (".tif", ".tiff")
PILLOW_MAX_PIXELS = 89_478_485  # Pillow's own Image.MAX_IMAGE_PIXELS
TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")  # classic TIFF and BigTIFF, either byte order
PILLOW_16_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
CONVERT_ROWS = 1024  # rows converted to 8-bit at a time (bounds the float64 temporaries)

log = logging.getLogger("mixlib")


@dataclasses.dataclass
class ImageSource:
    """An input image, checked, not yet on the cluster.

    Attributes
    ----------
    path : Path, or UPath (an fsspec URL) for a Zarr array
    kind : 'pillow' (decoded in memory, by Pillow or tifffile), 'zarr' or 'tiff' (read lazily chunk by chunk)
    shape : tuple (H, W, C), C = 3 or 4
    storage_chunks : tuple (rows, cols) of the file's own chunks or tiles, or None
    pixels : ndarray (H, W, C) uint8 for 'pillow', else None
    frames : int, the frames (or pages) in the file; ``pixels`` holds the first (:func:`read_frames` decodes all)
    mode : str, the input's own pixel layout as Pillow names it ('L', 'P', 'I;16', 'RGB', 'RGBA', ...; for a TIFF
        decoded by tifffile its samples, e.g. 'uint16 x3'); the pixels are RGB or RGBA whatever it is
    icc_profile : bytes or None, the RGB colour profile the pixels are in (an output carries it on, so that colour
        managed viewers show the output's colours as the input's)
    """

    path: Path
    kind: str
    shape: tuple
    storage_chunks: tuple | None = None
    pixels: np.ndarray | None = None
    frames: int = 1
    icc_profile: bytes | None = None
    mode: str = ""

    def __post_init__(self):
        self.mode = self.mode or ("RGBA" if self.shape[2] == 4 else "RGB")

    @property
    def channels(self):
        return self.shape[2]

    @property
    def input_bytes(self):
        return tree_bytes(self.path)

    def chunk_shape(self, chunk_size):
        """Dask chunk (rows, cols) near ``chunk_size``, a multiple of the storage chunks."""
        if self.storage_chunks is None:
            return (chunk_size, chunk_size)
        return tuple(max(1, round(chunk_size / s)) * s for s in self.storage_chunks)

    def read_pixels(self):
        """The whole image ``(H, W, C)`` uint8 in this process (decoded already, or read from the Zarr array or
        TIFF)."""
        if self.pixels is not None:
            return self.pixels
        return read_region(self.kind, self.path, 0, self.shape[0], 0, self.shape[1])

    def row_reader(self):
        """For a Zarr array or a TIFF, ``read(top, bottom) -> (bottom - top, W, C)`` uint8, whole rows read from the
        file in the task that calls it (picklable); None for an image decoded in memory."""
        if self.kind == "pillow":
            return None
        return functools.partial(read_rows, self.kind, self.path, self.shape[1])

    def to_dask(self, chunk_size):
        """The image as a dask array ``(H, W, C)`` uint8, chunked along H and W only."""
        import dask.array as da

        rows, cols = self.chunk_shape(chunk_size)
        if self.kind == "zarr":
            return da.from_zarr(_open_zarr_array(self.path), chunks=(rows, cols, self.channels))
        if self.kind == "tiff":
            blocks = da.empty(self.shape, dtype=np.uint8, chunks=(rows, cols, self.channels))
            return blocks.map_blocks(read_tiff_block, str(self.path), dtype=np.uint8, token="read-tiff")
        return _scattered_image(self.pixels, (rows, cols))


def read_tiff_block(block, path, block_info=None):
    """Read one block's region of a TIFF (tifffile's Zarr store does not pickle: open it in the task)."""
    (r0, r1), (c0, c1), _ = block_info[None]["array-location"]
    return read_region("tiff", path, r0, r1, c0, c1)


def read_rows(kind, path, width, top, bottom):
    """Rows ``top:bottom`` ``(h, width, C)`` uint8 of a Zarr array or a TIFF ``width`` pixels wide."""
    return read_region(kind, path, top, bottom, 0, width)


def read_region(kind, path, r0, r1, c0, c1):
    """Pixels ``[r0:r1, c0:c1]`` ``(h, w, C)`` uint8 of a Zarr array or a TIFF, read from the file."""
    import zarr

    if kind == "zarr":
        return np.asarray(_open_zarr_array(path)[r0:r1, c0:c1])
    import tifffile

    with tifffile.imread(path, aszarr=True, key=0) as store:  # the first page, even of a multi-page TIFF
        return np.asarray(zarr.open_array(store, mode="r")[r0:r1, c0:c1])


def _scattered_image(pixels, chunk):
    """A decoded image on the workers, chunk by chunk: each block is scattered to a worker of its own choosing
    (one copy each; no single worker holds the whole image, and nothing is embedded in the graph)."""
    import dask.array as da
    from distributed import default_client

    tops, lefts = (range(0, n, c) for n, c in zip(pixels.shape[:2], chunk))
    grid = [[pixels[top:top + chunk[0], left:left + chunk[1]] for left in lefts] for top in tops]
    futures = default_client().scatter([block for row in grid for block in row], hash=False)
    width = len(grid[0])
    # Three levels of nesting for da.block: rows, columns, and the (single) channel block.
    return da.block([[[da.from_delayed(futures[i * width + j], shape=block.shape, dtype=block.dtype)]
                      for j, block in enumerate(row)] for i, row in enumerate(grid)])


def _open_zarr_array(path):
    import zarr

    return zarr.open_array(zarr_store(path, read_only=True), mode="r")


# ------------------------------------------------------------------------------------------ inspect

def resolve_input(name):
    """A path (or an fsspec URL) for an input name; ``sample:NAME`` names one of scikit-learn's sample photos."""
    if not name.startswith(SAMPLE_PREFIX):
        return location(name, "input")
    spec = importlib.util.find_spec("sklearn")
    if spec is None:
        raise InputError(f"{name} needs scikit-learn's sample photos; pip install scikit-learn or give an image path")
    folder = Path(spec.origin).parent / "datasets" / "images"
    path = folder / name[len(SAMPLE_PREFIX):]
    if not path.is_file():
        photos = ", ".join(sorted(p.name for p in folder.glob("*.jpg")))
        raise InputError(f"there is no sample photo {name[len(SAMPLE_PREFIX):]!r}; choose one of: {photos}")
    return path


def inspect_image(name, max_pixels):
    """Check an input image and read what the job needs before the cluster starts.

    Parameters
    ----------
    name : str, a path or ``sample:NAME``
    max_pixels : int, the decompression-bomb limit of images decoded in memory (by Pillow or tifffile)

    Returns
    -------
    ImageSource
    """
    path = resolve_input(name)
    if not path.exists():
        raise InputError(f"input {path} does not exist")
    if path.is_dir() or path.suffix.lower() == ".zarr":
        return _inspect_zarr(path)
    return _decode_url(path, max_pixels) if not is_local(path) else _inspect_local_file(path, max_pixels)


def _inspect_local_file(path, max_pixels):
    """A local image file: a TIFF by tifffile where it reads it, else Pillow."""
    if path.stat().st_size == 0:
        raise InputError(f"input {path} is empty (0 bytes)")
    source = None
    if path.suffix.lower() in TIFF_SUFFIXES or _starts_like_tiff(path):
        source = _inspect_tiff(path, max_pixels)
    return source if source is not None else _decode_with_pillow(path, max_pixels)


def _decode_url(path, max_pixels):
    """An image file at an fsspec URL, read whole and decoded by Pillow (a TIFF at a URL too: Pillow reads 8-bit
    TIFFs; tifffile's lazy and deep routes need a local file)."""
    import io

    data = path.read_bytes()
    if not data:
        raise InputError(f"input {path} is empty (0 bytes)")
    return _decode_with_pillow(path, max_pixels, io.BytesIO(data))


def _starts_like_tiff(path):
    with open(path, "rb") as f:
        return f.read(4) in TIFF_MAGIC


def _inspect_zarr(path):
    import zarr

    try:
        node = zarr.open(zarr_store(path, read_only=True), mode="r")
    except Exception as e:  # zarr raises several types for a folder that is not a store
        raise InputError(f"input {path} is not a readable Zarr array ({e.__class__.__name__}: {e})") from None
    if not isinstance(node, zarr.Array):
        raise InputError(f"input {path} is a Zarr group; give the path of the (H, W, 3|4) uint8 array inside it")
    _check_shape(path, node.shape, node.dtype)
    return ImageSource(path, "zarr", tuple(node.shape), storage_chunks=tuple(node.chunks[:2]))


def _check_shape(path, shape, dtype):
    if len(shape) != 3 or shape[2] not in (3, 4) or np.dtype(dtype) != np.uint8:
        raise InputError(f"input {path} has shape {tuple(shape)} and dtype {dtype}; "
                         "an image array must be (H, W, 3) or (H, W, 4) uint8")
    if shape[0] == 0 or shape[1] == 0:
        raise InputError(f"input {path} has no pixels (shape {tuple(shape)})")


def _check_pixels(path, height, width, max_pixels):
    """The decompression-bomb guard of an image decoded in memory."""
    if height * width > max_pixels:
        raise InputError(f"input {path} has {height * width} pixels, more than --max-pixels {max_pixels} (the "
                         "decompression-bomb guard); raise --max-pixels if you trust the file, or convert it to a "
                         "tiled RGB 8-bit TIFF or a Zarr array, which are read chunk by chunk")


# -------------------------------------------------------------------------------------------- TIFF

@dataclasses.dataclass(frozen=True)
class SampleLayout:
    """How to read decoded samples ``(H, W, S)`` as a colour image.

    Attributes
    ----------
    colours : int, 1 (grey) or 3 (RGB): the first samples of a pixel
    top : int or None, the value of white for integer samples (``2**bits - 1``); None: floating point, 0..1
    alpha : int or None, the index of the alpha sample
    associated : bool, the colours are premultiplied by alpha
    inverted : bool, grey where 0 is white (TIFF's min-is-white)
    """

    colours: int
    top: int | None
    alpha: int | None = None
    associated: bool = False
    inverted: bool = False


def to_rgb8(samples, layout):
    """Scale decoded samples to an 8-bit RGB(A) image: ``round(v * 255 / top)``, or ``round(v * 255)`` for
    floating-point samples, clipped to 0..255; grey is repeated into R, G and B.

    Parameters
    ----------
    samples : ndarray (H, W, S), unsigned integer or floating point (checked by the caller)
    layout : SampleLayout

    Returns
    -------
    ndarray (H, W, 3) or (H, W, 4) uint8, unassociated alpha
    """
    height, width = samples.shape[:2]
    pixels = np.empty((height, width, 3 if layout.alpha is None else 4), dtype=np.uint8)
    for top in range(0, height, CONVERT_ROWS):
        pixels[top:top + CONVERT_ROWS] = _rgb8_rows(samples[top:top + CONVERT_ROWS], layout)
    return pixels


def _rgb8_rows(rows, layout):
    """:func:`to_rgb8` of a band of rows ``(h, W, S)`` (float64 temporaries of the band only)."""
    unit = rows.astype(np.float64)
    if layout.top is not None:
        unit /= layout.top
    colour = unit[..., :layout.colours]
    if layout.inverted:
        colour = 1.0 - colour
    channels = [colour] if layout.colours == 3 else [colour] * 3
    if layout.alpha is not None:
        alpha = unit[..., layout.alpha:layout.alpha + 1]
        if layout.associated:
            colour = np.divide(colour, alpha, out=np.zeros_like(colour), where=alpha > 0)
            channels = [colour] if layout.colours == 3 else [colour] * 3
        channels.append(alpha)
    return np.clip(np.floor(np.concatenate(channels, axis=2) * 255 + 0.5), 0, 255).astype(np.uint8)


def check_samples(path, samples):
    """Refuse samples with no faithful 8-bit reading: signed integers, NaN or infinity, floating point outside
    0..1 (beyond half an 8-bit level)."""
    kind = samples.dtype.kind
    if kind == "i":
        raise InputError(f"input {path} holds signed {8 * samples.dtype.itemsize}-bit integer samples, which have "
                         "no standard brightness scale; save it with unsigned 8- or 16-bit samples, or with "
                         "floating-point samples in 0..1")
    if kind != "f":
        return
    low, high = float(np.min(samples)), float(np.max(samples))
    if not (np.isfinite(low) and np.isfinite(high)):
        raise InputError(f"input {path} has NaN or infinite samples, which have no colour; replace them, or save "
                         "the image with 8- or 16-bit integer samples")
    if low < -0.5 / 255 or high > 1 + 0.5 / 255:
        raise InputError(f"input {path} holds floating-point samples from {low:.6g} to {high:.6g}; a "
                         "floating-point image must hold 0 (black) to 1 (white): rescale it to 0..1, or save it "
                         "with 8- or 16-bit integer samples")


def _inspect_tiff(path, max_pixels):
    """A TIFF, by its first page: RGB(A) uint8 read lazily, chunk by chunk; grey and RGB(A) of more than 8 bits
    or floating point decoded in memory by tifffile and scaled to 8-bit; None for what Pillow decodes (8-bit
    grey, palette, bilevel, CMYK, YCbCr, or a compression tifffile cannot decode without imagecodecs)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            frames = _tiff_frames(tif)
            route = _tiff_route(page)
            if route is None:
                return None
            _check_tiff_bytes(path, page)
            orientation = page.tags.valueof(274, 1)  # TIFF Orientation, numbered as EXIF's
            if route == "lazy" and orientation not in (1, None):
                if page.shape[0] * page.shape[1] <= max_pixels:
                    route = "memory"
                else:
                    log.warning("input %s has TIFF orientation %d, which is not applied to a TIFF read chunk by "
                                "chunk: the output keeps the stored orientation", path, orientation)
            if route == "lazy":
                return _lazy_tiff(path, page, frames)
            return _decode_tiff(path, page, frames, max_pixels, orientation)
    except (tifffile.TiffFileError, ValueError, IndexError, KeyError, struct.error) as e:
        raise InputError(f"input {path} is not a readable TIFF ({e})") from None


def _tiff_frames(tif):
    """The pages of a TIFF that are images of their own (reduced-resolution copies, such as thumbnails, are not)."""
    if len(tif.pages) == 1:
        return 1
    return sum(1 for page in tif.pages if not page.is_reduced)


def _tiff_route(page):
    """'lazy', 'memory' or None (Pillow) for the first page of a TIFF."""
    from tifffile import EXTRASAMPLE, PHOTOMETRIC, TIFF

    if page.compression not in TIFF.DECOMPRESSORS or page.dtype is None:
        return None
    if page.photometric not in (PHOTOMETRIC.RGB, PHOTOMETRIC.MINISBLACK, PHOTOMETRIC.MINISWHITE):
        return None
    if page.axes not in ("YX", "YXS", "SYX") or page.dtype.kind not in "uif" or page.bitspersample < 8:
        return None
    if page.dtype == np.uint8 and page.bitspersample == 8:
        rgb = page.photometric == PHOTOMETRIC.RGB and page.axes == "YXS" and page.shape[2] in (3, 4)
        if rgb and EXTRASAMPLE.ASSOCALPHA in tuple(page.extrasamples)[:1]:
            return "memory"  # premultiplied colours: divided by alpha when decoded (not chunk by chunk)
        return "lazy" if rgb else None
    return "memory"


def _check_tiff_bytes(path, page):
    ends = np.asarray(page.dataoffsets, np.int64) + np.asarray(page.databytecounts, np.int64)
    if len(ends) and ends.max() > path.stat().st_size:
        raise InputError(f"input {path} is truncated: its tiles end at byte {ends.max()} "
                         f"but the file has {path.stat().st_size} bytes")


def _lazy_tiff(path, page, frames):
    shape = page.shape
    chunk = (page.tilelength, page.tilewidth) if page.is_tiled else (page.rowsperstrip or shape[0], shape[1])
    _check_shape(path, shape, page.dtype)
    return ImageSource(path, "tiff", tuple(shape), storage_chunks=(min(chunk[0], shape[0]), chunk[1]),
                       frames=frames, icc_profile=_tiff_icc_profile(page))


def _decode_tiff(path, page, frames, max_pixels, orientation):
    """Decode the first page of a TIFF in memory and scale it to 8-bit RGB(A)."""
    axes = page.axes
    height, width = (page.shape[1:] if axes == "SYX" else page.shape[:2])
    _check_pixels(path, height, width, max_pixels)
    samples = page.asarray()
    samples = np.moveaxis(samples, 0, -1) if axes == "SYX" else samples.reshape(height, width, -1)
    check_samples(path, samples)
    pixels = orient(to_rgb8(samples, _tiff_layout(path, page, samples)), orientation)
    _check_shape(path, pixels.shape, pixels.dtype)
    return ImageSource(path, "pillow", pixels.shape, pixels=pixels, frames=frames,
                       icc_profile=_tiff_icc_profile(page), mode=f"{samples.dtype} x{samples.shape[2]}")


def _tiff_icc_profile(page):
    """The RGB ICC profile of a TIFF page (tag 34675, InterColorProfile), or None."""
    return rgb_profile(page.tags.valueof(34675))


def rgb_profile(profile):
    """``profile`` (bytes) when it is an ICC profile of RGB data, else None: a grey or CMYK profile does not
    describe the RGB pixels the job makes of such an image."""
    if profile is None or len(profile) < 20:
        return None
    if bytes(profile[16:20]) != b"RGB ":  # the profile header's data colour space
        log.warning("the input's %s colour profile does not apply to the RGB pixels made of it: not carried over",
                    bytes(profile[16:20]).decode("ascii", "replace").strip())
        return None
    return bytes(profile)


def _tiff_layout(path, page, samples):
    """The :class:`SampleLayout` of a grey or RGB TIFF page, from its tags."""
    from tifffile import EXTRASAMPLE, PHOTOMETRIC

    colours = 3 if page.photometric == PHOTOMETRIC.RGB else 1
    if samples.shape[2] < colours:
        raise InputError(f"input {path} is an RGB TIFF with {samples.shape[2]} sample(s) per pixel")
    extra = tuple(page.extrasamples)[:samples.shape[2] - colours]
    alpha_kinds = (EXTRASAMPLE.ASSOCALPHA, EXTRASAMPLE.UNASSALPHA)
    alpha = colours if extra and extra[0] in alpha_kinds else None
    top = (1 << page.bitspersample) - 1 if samples.dtype.kind == "u" else None
    return SampleLayout(colours, top, alpha, associated=alpha is not None and extra[0] == EXTRASAMPLE.ASSOCALPHA,
                        inverted=page.photometric == PHOTOMETRIC.MINISWHITE)


def orient(pixels, orientation):
    """Apply an EXIF / TIFF orientation (1 to 8) to ``pixels (H, W, C)``, as ``PIL.ImageOps.exif_transpose``
    does; the result is ``(W, H, C)`` for orientations 5 to 8."""
    turned = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
              5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1),
              7: lambda a: a[::-1, ::-1].swapaxes(0, 1), 8: lambda a: np.rot90(a, 1)}
    if orientation not in turned:
        return pixels
    return np.ascontiguousarray(turned[orientation](pixels))


# ------------------------------------------------------------------------------------------ Pillow

def _decode_with_pillow(path, max_pixels, file=None):
    """Decode an image with Pillow into RGB or RGBA, upright (EXIF orientation), keeping the decompression-bomb
    guard; ``file`` is an open binary file of ``path`` (read from a URL), else ``path`` is opened."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with _without_pillow_pixel_limit(), Image.open(file if file is not None else path) as im:
            _check_pixels(path, im.height, im.width, max_pixels)
            frames = _pillow_frames(im)
            im.load()
            mode = im.mode
            ImageOps.exif_transpose(im, in_place=True)
            pixels = pillow_pixels(path, im)
            icc_profile = rgb_profile(im.info.get("icc_profile") or None)
    except UnidentifiedImageError:
        raise InputError(f"input {path} is not an image that Pillow, tifffile or Zarr can read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise InputError(f"input {path} is truncated or corrupt ({e})") from None
    _check_shape(path, pixels.shape, pixels.dtype)
    return ImageSource(path, "pillow", pixels.shape, pixels=pixels, frames=frames, icc_profile=icc_profile,
                       mode=mode)


@contextlib.contextmanager
def _without_pillow_pixel_limit():
    """Pillow's own decompression-bomb check off while opening (its limit is fixed; :func:`_check_pixels` applies
    ``--max-pixels`` instead, before anything is decoded)."""
    from PIL import Image

    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


@dataclasses.dataclass
class Frames:
    """The frames of an animation (GIF, APNG, animated WebP) or the pages of a multi-page file, decoded.

    Attributes
    ----------
    pixels : list of ndarray (H, W, C) uint8, every frame composited as a viewer shows it, all RGB or all RGBA
        (RGBA when any frame has transparency)
    durations : list of int or None, each frame's display time in milliseconds (None for pages)
    loop : int or None, the animation's loop count (0: forever; None: the file gives none)
    """

    pixels: list
    durations: list | None
    loop: int | None

    @property
    def same_size(self):
        return len({frame.shape[:2] for frame in self.pixels}) == 1


def read_frames(path, max_pixels):
    """Every frame of an animation or page of a multi-page file (:class:`Frames`), decoded by Pillow, upright;
    InputError for a file whose frames are more than ``max_pixels`` pixels in all, or that is truncated."""
    import io

    from PIL import Image, ImageOps, ImageSequence

    file = io.BytesIO(path.read_bytes()) if not is_local(path) else None
    decoded, durations = [], []
    try:
        with _without_pillow_pixel_limit(), Image.open(file if file is not None else path) as im:
            count = _pillow_frames(im)
            if count * im.height * im.width > max_pixels:
                raise InputError(f"input {path} has {count} frames of {im.width}x{im.height}, "
                                 f"{count * im.height * im.width} pixels in all, more than --max-pixels {max_pixels} "
                                 "(the decompression-bomb guard); raise --max-pixels if you trust the file")
            loop = im.info.get("loop")
            for frame in ImageSequence.Iterator(im):
                durations.append(frame.info.get("duration"))
                decoded.append(pillow_pixels(path, ImageOps.exif_transpose(frame)))
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise InputError(f"input {path} is truncated or corrupt ({e})") from None
    if any(frame.shape[2] == 4 for frame in decoded):
        decoded = [frame if frame.shape[2] == 4 else np.dstack([frame, np.full(frame.shape[:2], 255, np.uint8)])
                   for frame in decoded]
    timed = all(duration is not None for duration in durations)
    return Frames(decoded, [int(round(d)) for d in durations] if timed else None,
                  None if loop is None else int(loop))


def _pillow_frames(im):
    """The frames of an animation or pages of a multi-page file (an MPO's extra pictures are previews or depth
    maps of the same photo, not frames)."""
    if im.format == "MPO":
        return 1
    return getattr(im, "n_frames", 1)


def pillow_pixels(path, im):
    """The pixels of a decoded Pillow image as ``(H, W, 3|4)`` uint8, 16-bit and floating-point modes scaled."""
    if im.mode in PILLOW_16_BIT_MODES + ("I", "F"):
        return _deep_grey_pixels(path, im)
    mode = "RGBA" if _has_alpha(im) else "RGB"
    if im.mode == mode:
        return np.asarray(im)
    try:
        return np.asarray(im.convert(mode))
    except ValueError as e:  # a mode Pillow cannot convert (LAB, HSV)
        raise InputError(f"input {path} has Pillow mode {im.mode}, which Pillow cannot convert to {mode} "
                         f"({e}); save it as RGB") from None


def _deep_grey_pixels(path, im):
    """Grey of Pillow's 16-bit ('I;16*'), 32-bit integer ('I', 16-bit data from PNG or PGM) or floating-point
    ('F') modes as 8-bit RGB, or RGBA when a grey value is marked transparent.

    Returns
    -------
    ndarray (H, W, 3|4) uint8
    """
    values = np.asarray(im)
    if im.mode == "I":
        low, high = int(values.min()), int(values.max())
        if low < 0 or high > 0xFFFF:
            raise InputError(f"input {path} holds 32-bit integer samples from {low} to {high}, which have no "
                             "standard brightness scale; save it with unsigned 8- or 16-bit samples")
        values = values.astype(np.uint16)
    check_samples(path, values)
    top = None if values.dtype.kind == "f" else 0xFFFF
    pixels = to_rgb8(values.reshape(values.shape[0], values.shape[1], 1), SampleLayout(1, top))
    transparent = im.info.get("transparency")
    if not isinstance(transparent, int) or top is None:
        return pixels
    alpha = np.where(values == transparent, 0, 255).astype(np.uint8)
    return np.dstack([pixels, alpha])


def _has_alpha(im):
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
