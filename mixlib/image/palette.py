"""Palettes: k colours fitted to an image's exact colour histogram, and the palette index of every distinct colour.

The fit runs on the distinct colours weighted by their pixel counts (:mod:`mixlib.fit`), which gives exactly the
centres (or the mixture) that fitting every pixel gives. The palette is the fitted colours rounded to 8 bits, with
duplicates and unused entries dropped; the squared error of the compressed image follows from the histogram alone.
"""

import dataclasses
import math

import numpy as np

from ..fit.gmm import fit_gmm, most_likely_component
from ..fit.kmeans import fit_kmeans
from .colors import decode_colours


@dataclasses.dataclass
class Palette:
    """The palette of a compressed image and the palette index of every distinct colour.

    Attributes
    ----------
    colours : ndarray (p, C) uint8, distinct entries, sorted
    code_labels : ndarray (M,) uint8 or uint16, palette index of each distinct colour code
    fit : KMeansResult, GMMResult or EveryColour: what the palette came from (their summary protocol:
        ``describe()``, ``summary(n_points)``)
    """

    colours: np.ndarray
    code_labels: np.ndarray
    fit: object = None


def fit_palette(codes, counts, channels, *, k, method="lloyd", max_iter=300, tol=1e-4, batch_size=4096,
                em_init="kmeans", em_tol=1e-3, reg_covar=1e-6, seed=0, progress=None, in_process=False,
                fixed_colours=None):
    """Fit a palette of at most ``k`` colours to an exact colour histogram, on the current Dask client or (with
    ``in_process``, e.g. inside a task) in this process: the same palette either way.

    With RGBA, fully transparent pixels (code 0) keep a palette entry of their own when k >= 2, and the
    other colours share the remaining k - 1 entries. An image with no more distinct colours than that keeps them
    all (k-means only; a mixture is always fitted).

    Parameters
    ----------
    codes : ndarray (M,) uint32, sorted distinct colour codes
    counts : ndarray (M,) int64, pixels of each colour
    channels : int, 3 or 4
    k : int, palette entries at most
    method : 'lloyd' or 'minibatch' (k-means, :func:`mixlib.fit.kmeans.fit_kmeans`) or 'gmm' (a Gaussian
        mixture, :func:`mixlib.fit.gmm.fit_gmm`); ``max_iter``, ``tol``, ``batch_size``, ``em_init``, ``em_tol``,
        ``reg_covar`` and ``seed`` go to the fit
    progress : callable ``(iteration, **values)`` or None, told of every iteration of the fit
    in_process : bool, fit in this process instead of on the cluster
    fixed_colours : ndarray (f, C) uint8 or None, colours that are palette entries exactly, counted in k (k-means
        only): the other centres are fitted around them, which never move, and a colour nearest to one of them
        takes it (:func:`mixlib.fit.kmeans.fit_kmeans`'s ``fixed``)

    Returns
    -------
    Palette
    """
    colours = decode_colours(codes, channels).astype(np.float64)
    transparent = channels == 4 and k >= 2 and codes[0] == 0
    fitted = slice(1, None) if transparent else slice(None)
    entries = k - int(transparent)
    points, weights = colours[fitted], counts[fitted].astype(np.float64)
    fixed = _fixed_centres(fixed_colours, channels, transparent, entries)
    if len(fixed) and method == "gmm":
        raise ValueError("fixed colours need a k-means palette (lloyd or minibatch), not gmm")
    if len(fixed):
        return _palette_with_fixed(codes, points, weights, fixed, transparent, entries, channels, k=k, method=method,
                                   max_iter=max_iter, tol=tol, seed=seed, batch_size=batch_size, progress=progress,
                                   in_process=in_process)
    if method == "gmm":
        fit = fit_gmm(points, weights, k=min(entries, len(points)), init=em_init, max_iter=max_iter, tol=em_tol,
                      reg_covar=reg_covar, seed=seed, progress=progress, in_process=in_process)
        centres, labels = fit.mixture.means, most_likely_component(points, fit.mixture)
    elif len(points) <= entries:
        fit = EveryColour(len(codes), k)
        centres, labels = points, np.arange(len(points))
    else:
        init = coarse_start(codes[fitted], points, weights, entries, max_iter=max_iter, tol=tol, seed=seed)
        fit = fit_kmeans(points, weights, k=entries, method=method, init=init, max_iter=max_iter, tol=tol,
                         seed=seed, batch_size=batch_size, progress=progress, in_process=in_process)
        centres, labels = fit.centres, np.asarray(fit.labels)
    if transparent:
        centres = np.vstack([np.zeros((1, 4)), centres])
        labels = np.concatenate([[0], labels + 1])
    colours, code_labels = unique_palette(centres, labels, channels)
    return Palette(colours, code_labels, fit)


def _fixed_centres(fixed_colours, channels, transparent, entries):
    """The fixed colours as centres ``(f, C)`` float64 (none: ``(0, C)``), without a fully transparent one when the
    image's transparent pixels have their entry already; ValueError when they do not fit in ``entries``."""
    if fixed_colours is None or not len(fixed_colours):
        return np.zeros((0, channels))
    fixed = np.asarray(fixed_colours, dtype=np.float64).reshape(-1, channels)
    if transparent:
        fixed = fixed[fixed[:, 3] > 0]
    if len(fixed) > entries:
        raise ValueError(f"{len(fixed)} fixed colours do not fit in {entries} palette entries")
    return fixed


def _palette_with_fixed(codes, points, weights, fixed, transparent, entries, channels, **fit):
    """:func:`fit_palette` with fixed colours: the palette keeps them all, used or not. An image whose colours and
    the fixed ones together fit in the entries keeps them all."""
    if len(np.unique(np.vstack([fixed, points]), axis=0)) <= entries:
        fit_result = EveryColour(len(codes), fit["k"])
        centres, labels = np.vstack([fixed, points]), np.arange(len(points)) + len(fixed)
    else:
        fit = {**fit, "k": entries}
        init = coarse_start(codes[slice(1, None) if transparent else slice(None)], points, weights, entries,
                            max_iter=fit["max_iter"], tol=fit["tol"], seed=fit["seed"], fixed=fixed)
        fit_result = fit_kmeans(points, weights, init=init, fixed=fixed, **fit)
        centres, labels = fit_result.centres, np.asarray(fit_result.labels)
    keep = np.arange(len(fixed))
    if transparent:
        centres = np.vstack([np.zeros((1, 4)), centres])
        labels, keep = np.concatenate([[0], labels + 1]), keep + 1
    colours, code_labels = unique_palette(centres, labels, channels, keep=keep)
    return Palette(colours, code_labels, fit_result)


COARSE_LEVELS = (5, 6)  # the coarse histograms keep this many high bits of each channel, coarsest first
DENSE_CELLS = 1 << 20  # cells counted in a dense array up to this many possible cells, else by a sort


def coarse_start(codes, colours, weights, k, *, max_iter, tol, seed, fixed=None):
    """Initial centres for Lloyd on an image's distinct colours, from fits to its coarse histograms.

    The colours that share their high bits in every channel form a cell, summed as one point at their weighted mean
    with their total weight (:func:`coarse_cells`). k-means++ and Lloyd (to ``tol``) run on the cells of 5 high
    bits (at most 2^15 for RGB), then Lloyd on the cells of 6 from there (``COARSE_LEVELS``): each level ends near
    where the next one ends, so Lloyd on every distinct colour that follows needs fewer iterations, and k-means++
    runs on a few thousand cells instead of every colour.

    Parameters
    ----------
    codes : ndarray (M,) uint32, the colour codes of ``colours``
    colours : ndarray (M, C) float64; weights : ndarray (M,) float64
    k : int
    fixed : ndarray (f, C) or None, centres that never move (:func:`mixlib.fit.kmeans.fit_kmeans`)

    Returns
    -------
    ndarray (k, C) float64, or the string 'k-means++' when no level has more cells than ``k``
    """
    start = "k-means++"
    for bits in COARSE_LEVELS:
        means, cell_weights = coarse_cells(codes, colours, weights, bits)
        if len(means) > k:
            start = fit_kmeans(means, cell_weights, k=k, init=start, max_iter=max_iter, tol=tol, seed=seed,
                               in_process=True, fixed=fixed).centres
    return start


def coarse_cells(codes, colours, weights, bits):
    """The cells of the colours that share their ``bits`` high bits in every channel, in the order of their codes:
    their weighted means ``(m, C)`` and total weights ``(m,)``."""
    channels = colours.shape[1]
    cell_of = np.zeros(len(codes), np.int64)  # the high bits of every channel, in the order of the codes' bytes
    for e in range(channels):
        byte = (codes >> np.uint32(8 * (channels - 1 - e))) & np.uint32(0xFF)
        cell_of |= (byte >> np.uint32(8 - bits)).astype(np.int64) << (bits * (channels - 1 - e))
    cells = 1 << (bits * channels)
    if cells > DENSE_CELLS:
        _, cell_of = np.unique(cell_of, return_inverse=True)
        cells = int(cell_of.max()) + 1
    cell_weights = np.bincount(cell_of, weights, minlength=cells)
    occupied = np.flatnonzero(cell_weights)
    means = np.column_stack([np.bincount(cell_of, weights * colours[:, e], minlength=cells)[occupied]
                             for e in range(channels)])
    cell_weights = cell_weights[occupied]
    return means / cell_weights[:, None], cell_weights


@dataclasses.dataclass(frozen=True)
class EveryColour:
    """The 'fit' of an image with no more distinct colours than k: every colour is a palette entry. It answers the
    fits' summary protocol (:meth:`describe`, :meth:`summary`) as k-means with no error would.

    Attributes
    ----------
    distinct : int, the image's distinct colours
    k : int, the palette entries asked for
    """

    distinct: int
    k: int

    def describe(self):
        return f"the image has {self.distinct} distinct colour(s), no more than k={self.k}: using them all"

    def summary(self, n_points):
        return {"iterations": 0, "converged": True, "inertia": 0.0, "tasks_per_iteration": 0}


def unique_palette(centres, labels, channels, keep=()):
    """Round centres to 8-bit colours and drop duplicate and unused entries.

    Parameters
    ----------
    centres : ndarray (k, C) float64
    labels : ndarray (M,) int, centre index of each distinct colour
    keep : indices of centres kept even when unused (fixed colours)

    Returns
    -------
    colours : ndarray (p, C) uint8, sorted, p <= k
    labels : ndarray (M,) uint8 (p <= 256) or uint16, palette index of each distinct colour
    """
    rounded = np.clip(np.rint(centres), 0, 255).astype(np.uint8)
    if channels == 4:
        rounded[rounded[:, 3] == 0] = 0  # every fully transparent entry is the same entry
    used = np.union1d(labels, np.asarray(keep, dtype=np.int64))
    colours, inverse = np.unique(rounded[used], axis=0, return_inverse=True)
    remap = np.zeros(len(centres), dtype=np.int64)
    remap[used] = inverse.ravel()
    dtype = np.uint8 if len(colours) <= 256 else np.uint16
    return colours, remap[labels].astype(dtype)


def squared_error(codes, counts, channels, palette):
    """Total squared error of the compressed image, from the histogram (exact, no pass over pixels)."""
    # (an RGBA palette applied to an RGB image: its colours' channels; the entries taken are opaque)
    diff = decode_colours(codes, channels).astype(np.float64) - palette.colours[palette.code_labels][:, :channels]
    return float(counts @ np.einsum("mc,mc->m", diff, diff))


def palette_psnr(codes, counts, channels, palette):
    """PSNR in dB of the compressed image against the original, from the histogram (``inf`` when lossless):
    ``10 log10(255^2 / MSE)`` with the MSE per channel (:func:`squared_error`)."""
    mse = squared_error(codes, counts, channels, palette) / (float(counts.sum()) * channels)
    return 10 * math.log10(255.0 ** 2 / mse) if mse > 0 else math.inf


def fit_to_psnr(fit, codes, counts, channels, target_psnr, k_max, fixed=0):
    """The palette of fewest colours, up to ``k_max``, whose PSNR reaches ``target_psnr``, by bisection over k (a
    palette's PSNR follows exactly from the histogram: :func:`palette_psnr`). The bisection takes the PSNR to grow
    with k, as it does but for the odd local optimum; the palette chosen always reaches the target, or is the
    ``k_max`` one when none does.

    Parameters
    ----------
    fit : callable ``(k) -> Palette``, the fit of k colours (the same seed and settings for every k)
    codes, counts, channels : the histogram (:func:`fit_palette`)
    target_psnr : float, dB
    k_max : int
    fixed : int, fixed colours of the fits: no fewer entries are tried than they and a transparent entry take

    Returns
    -------
    palette : Palette
    psnr : float, its PSNR in dB
    tried : list of (k, psnr) in the order fitted
    """
    tried = {}

    def psnr_of(k):
        palette = fit(k)
        tried[k] = (palette, palette_psnr(codes, counts, channels, palette))
        return tried[k][1]

    if psnr_of(k_max) < target_psnr:
        return (*tried[k_max], [(k, psnr) for k, (_, psnr) in tried.items()])
    low = max(1, fixed + int(channels == 4 and len(codes) and codes[0] == 0))
    high = k_max  # high reaches the target; every k below low was found not to (or cannot hold the fixed colours)
    while low < high:
        middle = (low + high) // 2
        if psnr_of(middle) >= target_psnr:
            high = middle
        else:
            low = middle + 1
    return (*tried[high], [(k, psnr) for k, (_, psnr) in tried.items()])


def parse_colours(texts):
    """Colours written ``#rrggbb`` or ``#rrggbbaa`` (several in one text, separated by commas), in order, repeats
    dropped: ``(n, 4)`` uint8, alpha 255 where it is not written; ValueError naming a text that is not one."""
    colours = []
    for text in (part.strip() for item in texts for part in item.split(",")):
        if not text:
            continue
        digits = text.removeprefix("#")
        if len(digits) not in (6, 8) or not all(c in "0123456789abcdefABCDEF" for c in digits):
            raise ValueError(f"{text!r} is not a colour: write #rrggbb or #rrggbbaa (hexadecimal)")
        values = [int(digits[i:i + 2], 16) for i in range(0, len(digits), 2)]
        colour = tuple(values + [255] * (4 - len(values)))
        if colour not in colours:
            colours.append(colour)
    return np.array(colours, dtype=np.uint8).reshape(-1, 4)


def colours_for(colours, channels):
    """Colours ``(n, 4)`` of :func:`parse_colours` for an image of ``channels``: RGBA as they are, RGB without the
    alpha, which must then be opaque (ValueError otherwise: an RGB image has no transparency)."""
    if channels == 4:
        return colours
    if (colours[:, 3] != 255).any():
        raise ValueError("a fixed colour with alpha below ff needs an RGBA image; this one is RGB")
    return colours[:, :3]
