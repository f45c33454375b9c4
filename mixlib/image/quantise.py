"""``mixlib.quantise``: an image in memory (numpy array or PIL image) quantised to k colours in this process, by the
steps a small ``jobs.compress`` runs: the exact colour histogram, the palette fitted to it, every pixel looked up."""

import dataclasses
import math

import numpy as np

from ..core.errors import InputError
from .colors import ColourLookup, image_histogram, merge_histograms
from .dither import DITHER_METHODS, THREADS, NearestSearch, dithered
from .palette import colours_for, fit_palette, fit_to_psnr, palette_psnr, parse_colours
from .palettes import apply_palette
from .readers import SampleLayout, check_samples, pillow_pixels, to_rgb8

HISTOGRAM_CHUNK = 2048  # rows and columns of the blocks whose histograms are merged (the result does not depend on it)
MAX_TARGET_PSNR = 99.0  # dB: a target above it asks for a lossless image, which k colours either give or not


@dataclasses.dataclass(frozen=True)
class Quantised:
    """An image quantised to a palette.

    Attributes
    ----------
    palette : ndarray (p, C) uint8, the distinct palette entries (p <= k), RGB or RGBA
    labels : ndarray (H, W) uint8 or uint16, the palette index of every pixel
    fit : the fit the palette came from: ``KMeansResult``, ``GMMResult`` or ``EveryColour`` (an image of at most k
        colours keeps them all), each with ``describe()`` and ``summary(n_points)``
    psnr : float, PSNR in dB of the output's pixels (dithered or not) against the (8-bit RGB or RGBA) input, ``inf``
        when lossless
    distinct_colours : int, the input's
    tried : list of (k, psnr): the palette sizes a ``target_psnr`` search fitted, in order (empty without one)
    palette_psnr : float, PSNR in dB of every pixel mapped to its colour's palette entry (undithered; what
        ``target_psnr`` and ``--min-psnr`` judge), ``psnr`` without dithering
    """

    palette: np.ndarray
    labels: np.ndarray
    fit: object
    psnr: float
    distinct_colours: int
    tried: list = dataclasses.field(default_factory=list)
    palette_psnr: float = None

    @property
    def pixels(self):
        """The quantised image ``(H, W, C)`` uint8."""
        return self.palette[self.labels]

    def to_pil(self):
        """A palette-mode ('P') PIL image (RGB palettes; RGBA ones give an 'RGBA' image)."""
        from PIL import Image

        if self.palette.shape[1] == 4 or len(self.palette) > 256:
            return Image.fromarray(self.pixels)
        image = Image.fromarray(self.labels.astype(np.uint8), mode="P")
        image.putpalette(self.palette.ravel().tolist())
        return image


def quantise(image, k=16, *, method="lloyd", seed=0, max_iter=300, tol=1e-4, batch_size=4096, em_init="kmeans",
             em_tol=1e-3, reg_covar=1e-6, target_psnr=None, fixed_colours=(), dither="none", dither_level=1.0):
    """Quantise an image to at most ``k`` colours: the palette and the label of every pixel.

    The same steps, and so the same palette, as ``python -m jobs.compress IMAGE --k K --method M --seed S`` on the
    same pixels: the exact colour histogram of the image (each distinct colour a point weighted by its pixels), a
    k-means or Gaussian-mixture fit to it (:func:`mixlib.image.palette.fit_palette`) and every pixel mapped to its
    colour's palette entry.

    Parameters
    ----------
    image : PIL.Image.Image, or ndarray (H, W) grey, (H, W, 1|2) grey (and alpha), (H, W, 3) RGB or (H, W, 4) RGBA
        with uint8 samples, uint16 samples (scaled to 8 bits), other integers within 0..255, or floating-point
        samples within 0..1. A PIL image is turned upright by its EXIF orientation, as the job reads files.
    k : int, palette entries at most (1..65536)
    method : 'lloyd', 'minibatch' (k-means) or 'gmm' (a Gaussian mixture's component means)
    seed : int
    max_iter, tol, batch_size : the k-means fit's (and max_iter the EM's)
    em_init, em_tol, reg_covar : the Gaussian mixture's initialisation, tolerance and covariance regularisation
    target_psnr : float or None, dB: the fewest colours up to ``k`` whose palette reaches it
        (:func:`mixlib.image.palette.fit_to_psnr`; ``--target-psnr``)
    fixed_colours : list of str, '#rrggbb' or '#rrggbbaa' colours always in the palette, counted in k (k-means;
        ``--fixed-colours``)
    dither : 'none', 'floyd-steinberg' or 'ordered': how pixels are mapped to the palette
        (:mod:`mixlib.image.dither`; ``--dither``)
    dither_level : float in 0..1, the share of the error carried on or of the ordered pattern's amplitude

    Returns
    -------
    Quantised

    Examples
    --------
    >>> import numpy as np
    >>> from mixlib import quantise
    >>> image = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    >>> result = quantise(image, 8, seed=0)
    >>> result.palette.shape, result.labels.shape
    ((8, 3), (64, 64))
    """
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= 1 << 16:
        raise ValueError(f"k must be an int from 1 to 65536, got {k!r}")
    if method not in ("lloyd", "minibatch", "gmm"):
        raise ValueError(f"method must be 'lloyd', 'minibatch' or 'gmm', got {method!r}")
    if target_psnr is not None and not 0 < target_psnr <= MAX_TARGET_PSNR:
        raise ValueError(f"target_psnr must be above 0 and at most {MAX_TARGET_PSNR} dB, got {target_psnr!r}")
    if dither not in DITHER_METHODS:
        raise ValueError(f"dither must be one of {', '.join(map(repr, DITHER_METHODS))}, got {dither!r}")
    if not 0 <= dither_level <= 1:
        raise ValueError(f"dither_level must be within 0..1, got {dither_level!r}")
    pixels = rgb_pixels(image)
    fixed = colours_for(parse_colours(fixed_colours), pixels.shape[2]) if len(fixed_colours) else None
    if fixed is not None and len(fixed) > k:
        raise ValueError(f"{len(fixed)} fixed colours do not fit in k={k}")
    result = quantise_frames([pixels], k, method=method, seed=seed, max_iter=max_iter, tol=tol,
                             batch_size=batch_size, em_init=em_init, em_tol=em_tol, reg_covar=reg_covar,
                             target_psnr=target_psnr, fixed_colours=fixed, dither=dither, dither_level=dither_level)
    return Quantised(result.palette, result.labels[0], result.fit, result.psnr, result.distinct_colours,
                     result.tried, result.palette_psnr)


@dataclasses.dataclass(frozen=True)
class QuantisedFrames:
    """Frames quantised to one palette: as :class:`Quantised`, with ``labels`` a list of ``(H_i, W_i)`` arrays
    and the PSNRs over every pixel of every frame."""

    palette: np.ndarray
    labels: list
    fit: object
    psnr: float
    distinct_colours: int
    tried: list
    palette_psnr: float


def quantise_frames(frames, k, *, target_psnr=None, chunk_size=HISTOGRAM_CHUNK, palette=None, palette_source="",
                    dither="none", dither_level=1.0, threads=THREADS, **fit):
    """Quantise frames ``(H_i, W_i, C)`` uint8 (C = 3 or 4, the same for all) to one palette in this process: what a
    batch's task does to each image (:func:`mixlib.image.batch.compress_image`), and to the frames of an animation.

    The palette is fitted to the merged exact colour histogram of every frame (so each frame's pixels count as
    they would in one image of them all), then every frame is mapped to it, or dithered frame by frame.

    Parameters
    ----------
    frames : list of ndarray (H_i, W_i, C) uint8
    k, target_psnr : :func:`quantise`'s
    chunk_size : int, the side of the blocks whose histograms are merged (the result does not depend on it)
    palette : ndarray (p, 3|4) uint8 or None, entries applied instead of a fit
        (:func:`mixlib.image.palettes.apply_palette`), from the file ``palette_source``
    dither, dither_level : :func:`quantise`'s
    threads : int, of Floyd-Steinberg (:func:`mixlib.image.dither.dither_strip`; the labels do not depend on it)
    fit : the keyword arguments of :func:`mixlib.image.palette.fit_palette` but ``k``

    Returns
    -------
    QuantisedFrames
    """
    channels = frames[0].shape[2]
    histogram = merge_histograms([image_histogram(frame, chunk_size) for frame in frames])
    codes, counts = histogram["codes"], histogram["counts"]

    def palette_of(colours):
        return fit_palette(codes, counts, channels, k=colours, in_process=True, **fit)

    tried = []
    if palette is not None:
        chosen = apply_palette(codes, channels, palette, palette_source)
        psnr = palette_psnr(codes, counts, channels, chosen)
    elif target_psnr is None:
        chosen = palette_of(k)
        psnr = palette_psnr(codes, counts, channels, chosen)
    else:
        fixed = fit.get("fixed_colours")
        chosen, psnr, tried = fit_to_psnr(palette_of, codes, counts, channels, target_psnr, k,
                                          fixed=0 if fixed is None else len(fixed))
    lookup = ColourLookup(codes, chosen.code_labels, channels)
    labels, error = mapped_frames(frames, lookup, chosen.colours, dither, dither_level, threads)
    if error is None:
        written = psnr
    else:
        samples = sum(frame.size for frame in frames)
        written = 10 * math.log10(255.0 ** 2 * samples / error) if error else math.inf
    return QuantisedFrames(chosen.colours, labels, chosen.fit, written, len(codes), tried, psnr)


def mapped_frames(frames, lookup, colours, dither, dither_level, threads=THREADS):
    """Every frame's palette indices: each colour's entry through ``lookup`` (a ColourLookup), or dithered to
    ``colours`` (``dither`` 'floyd-steinberg' or 'ordered', on ``threads``): ``(labels, error)``, the list of
    ``(H_i, W_i)`` arrays and, when dithered, the squared error of the pixels they give (an int; None undithered,
    where the palette's PSNR is the output's)."""
    if dither == "none":
        return [lookup(frame) for frame in frames], None
    search = NearestSearch(colours)
    labels, errors = zip(*(dithered(frame, colours, dither, dither_level, threads, search) for frame in frames))
    return list(labels), sum(errors)


def rgb_pixels(image):
    """An image in memory as 8-bit RGB or RGBA pixels ``(H, W, 3|4)`` uint8 (see :func:`quantise`); ValueError
    for what has no faithful 8-bit colour reading."""
    if hasattr(image, "getbands"):  # a PIL image
        return _pil_pixels(image)
    samples = np.asarray(image)
    if samples.ndim == 2:
        samples = samples[:, :, None]
    if samples.ndim != 3 or samples.shape[2] not in (1, 2, 3, 4) or 0 in samples.shape:
        raise ValueError(f"an image is (H, W), or (H, W, C) with 1 to 4 channels; got shape {samples.shape}")
    samples = _unsigned(samples)
    if samples.dtype.kind == "f":
        _checked(check_samples, "image", samples)
    colours = 1 if samples.shape[2] <= 2 else 3
    if samples.dtype == np.uint8 and colours == 3:
        return np.ascontiguousarray(samples)
    top = None if samples.dtype.kind == "f" else np.iinfo(samples.dtype).max
    alpha = colours if samples.shape[2] in (2, 4) else None
    return to_rgb8(samples, SampleLayout(colours, top, alpha))


def _unsigned(samples):
    """Integer samples as uint8 (integers within 0..255) or uint16 (16-bit samples); floats and bools kept
    (bools as floats)."""
    if samples.dtype == bool:
        return samples.astype(np.float64)
    if samples.dtype.kind == "f" or samples.dtype in (np.uint8, np.uint16):
        return samples
    if samples.dtype.kind not in "iu":
        raise ValueError(f"image samples must be numbers; got dtype {samples.dtype}")
    low, high = int(samples.min()), int(samples.max())
    if low < 0 or high > 255:
        raise ValueError(f"integer samples from {low} to {high} have no standard brightness scale: give uint8, "
                         "uint16, or floats within 0..1")
    return samples.astype(np.uint8)


def _pil_pixels(image):
    """A PIL image's pixels, upright, as the job decodes a file (16-bit and floating-point grey scaled)."""
    from PIL import ImageOps

    return _checked(pillow_pixels, "image", ImageOps.exif_transpose(image))


def _checked(function, *args):
    """``function(*args)``, its InputError (a job's exit status 2) raised as ValueError."""
    try:
        return function(*args)
    except InputError as e:
        raise ValueError(str(e)) from None
