"""Colour compression: quantise an RGB(A) image to k colours by k-means on its exact colour histogram.

The pipeline: check everything (:func:`plan`) -> colour histogram, a tree reduction over the image's
chunks -> k-means on the distinct colours weighted by their counts -> palette -> a blockwise pass that maps
every pixel to its palette entry through a lookup table and writes the output -> rename into place.
"""

import dataclasses
import json
import logging
import math
import platform
import threading
import time
from pathlib import Path

import numpy as np

from . import __version__
from .checkpoint import writable_folder
from .cluster import ClusterOptions, with_rebuilds
from .colors import ColourLookup, checkpointed_histogram, colour_histogram, decode_colours, saved_block_shape
from .config import option
from .errors import InputError
from .images import (OUTPUT_SUFFIXES, PILLOW_MAX_PIXELS, PNG_MAX_COLOURS, check_output, check_png_size,
                     thumbnail_step, inspect_image, side_by_side,
                     staged_outputs, write_png, write_tiff, write_zarr)
from .gmm import GMMResult, bic, fit_gmm, most_likely_component, save_mixture
from .kmeans import fit_kmeans
from .progress import IterationProgress, computed
from .storage import is_local, location, remove_tree, tree_bytes

log = logging.getLogger("mixlib")



@dataclasses.dataclass(frozen=True)
class CompressSettings(ClusterOptions):
    """Settings of ``python -m jobs.compress`` (keys of configs/compress.toml)."""

    input: str = option("sample:china.jpg", "image: a file Pillow reads, an RGB(A) TIFF, a Zarr array "
                                            "(H, W, 3|4) uint8, or sample:NAME for scikit-learn's photos",
                                            group="input and output")
    out: str = option("outputs/compress/{stem}-k{k}.png", "output .png (palette), .tif (tiled) or .zarr; "
                                                          "{stem}, {k} and {method} are filled in",
                                                          group="input and output")
    compare: str = option("", "write the original and the compressed image side by side here ('' for none)",
                          group="input and output")
    report: str = option("", "write a JSON report here ('' for none)", group="input and output")
    overwrite: bool = option(False, "replace outputs that exist", group="input and output")
    k: int = option(16, "number of colours", minimum=1, maximum=65536, group="model")
    method: str = option("lloyd", "lloyd or minibatch k-means, or gmm: a Gaussian mixture fitted by EM",
                         choices=("lloyd", "minibatch", "gmm"), group="model")
    max_iter: int = option(300, "Lloyd iterations, mini-batch steps or EM iterations, at most", minimum=1,
                           group="model")
    tol: float = option(1e-4, "k-means: stop when the squared centre shift is below tol x the mean colour "
                              "variance", minimum=0.0, group="model")
    batch_size: int = option(4096, "mini-batch: points per step", minimum=1, group="model")
    em_tol: float = option(1e-3, "gmm: stop when the mean log-likelihood per pixel improves by less", minimum=0.0,
                           group="model")
    em_init: str = option("kmeans", "gmm: initial responsibilities", choices=("kmeans", "random"), group="model")
    reg_covar: float = option(1e-6, "gmm: added to covariance diagonals, relative to the colour variance",
                              minimum=0.0, group="model")
    save_model: str = option("", "gmm: write the fitted mixture here (.json) for jobs.sample ('' for none)",
                             group="input and output")
    checkpoint_dir: str = option("", "Zarr or TIFF input: keep the colour histogram of each block of 2 x 4 chunks "
                                     "in this folder (shared with the workers; a path or an fsspec URL) as the "
                                     "pass goes, so that --resume continues a killed job", group="input and output")
    resume: bool = option(False, "continue the colour histogram of a killed job from --checkpoint-dir",
                          group="input and output")
    seed: int = option(0, "random seed (k-means++ and mini-batch draws)", minimum=0, group="model")
    chunk_size: int = option(2048, "Dask chunk side in pixels (rounded to the input's own chunks)", minimum=16)
    tile_size: int = option(1024, "tile side of TIFF output and chunk side of Zarr output (multiple of 16)",
                            minimum=16)
    max_pixels: int = option(PILLOW_MAX_PIXELS, "largest image Pillow may decode (decompression-bomb guard)",
                             minimum=1, group="input and output")
    log_level: str = option("info", "log detail on stderr", choices=("debug", "info", "warning", "error"))


@dataclasses.dataclass
class Plan:
    """What a checked job will read and write."""

    source: object
    out: Path
    compare: Path | None
    report: Path | None
    save_model: Path | None
    checkpoint: Path | None
    checkpoint_source: dict | None  # what the checkpoint is of (:func:`_source_fingerprint`), computed once


def plan(settings):
    """Check settings, input and outputs before any heavy work; raise InputError on the first problem."""
    if settings.tile_size % 16:
        raise InputError(f"--tile-size is {settings.tile_size}; TIFF tiles need a multiple of 16")
    stem = Path(settings.input.removeprefix("sample:")).stem
    fill = {"stem": stem, "k": settings.k, "method": settings.method}
    try:
        out, compare, report, save_model = (location(p.format(**fill), flag) if p else None for p, flag in (
            (settings.out, "--out"), (settings.compare, "--compare"), (settings.report, "--report"),
            (settings.save_model, "--save-model")))
    except (KeyError, ValueError, IndexError) as e:
        raise InputError(f"an output path has a bad placeholder ({e}); use {{stem}}, {{k}} or {{method}}") from None
    if out is None:
        raise InputError("--out is empty; give an output path ending in .png, .tif or .zarr")
    if out.suffix.lower() == ".png" and settings.k > PNG_MAX_COLOURS:
        raise InputError(f"--k {settings.k} does not fit a PNG palette (at most {PNG_MAX_COLOURS}); "
                         "write .tif or .zarr instead")
    if save_model is not None and settings.method != "gmm":
        raise InputError("--save-model writes a Gaussian mixture: use it with --method gmm")
    for path, suffixes in ((out, OUTPUT_SUFFIXES), (compare, (".png",)), (report, (".json",)),
                           (save_model, (".json",))):
        if path is not None:
            check_output(path, settings.overwrite, suffixes)
    named = [p for p in (out, compare, report, save_model) if p is not None]
    if len(set(named)) < len(named):
        raise InputError("--out, --compare, --report and --save-model must be different files")
    # The settings and outputs are fine: this process loads dask.array and the compiled loops while it decodes the
    # input (Pillow's decoder lets go of the GIL; 67 MP: 0.9 s less), and the embedded cluster's threaded workers
    # share them. (Worker processes load the compiled loops in their first task.)
    threading.Thread(target=_preload, name="preload", daemon=True).start()
    source = inspect_image(settings.input, settings.max_pixels)
    height, width, _ = source.shape
    check_png_size(out, height, width)
    checkpoint, checkpoint_source = _checked_checkpoint(settings, source)
    return Plan(source, out, compare, report, save_model, checkpoint, checkpoint_source)


def worker_paths(job_plan):
    """What the workers touch themselves: ``(reads, writes)``, a Zarr or TIFF input they read chunk by chunk, and
    the folders of a Zarr output and of the histogram checkpoint they write into."""
    reads = [job_plan.source.path] if job_plan.source.kind != "pillow" else []
    writes = [job_plan.out.parent] if job_plan.out.suffix.lower() == ".zarr" else []
    if job_plan.checkpoint is not None:
        writes.append(job_plan.checkpoint)
    return reads, writes


def _checked_checkpoint(settings, source):
    """The histogram checkpoint folder and the fingerprint of what it keeps, or (None, None); InputError when it
    cannot serve this input."""
    if not settings.checkpoint_dir:
        if settings.resume:
            raise InputError("--resume continues from --checkpoint-dir: give the folder of the killed job")
        return None, None
    if source.kind == "pillow":
        raise InputError("--checkpoint-dir needs a Zarr or TIFF input (read chunk by chunk); a decoded image is "
                         "simply read again")
    folder = location(settings.checkpoint_dir, "--checkpoint-dir")
    fingerprint = _source_fingerprint(source, settings.chunk_size)
    saved = _read_json(folder / CHECKPOINT_SOURCE)
    if settings.resume and saved is not None and saved != fingerprint:
        raise InputError(f"the checkpoint in {folder} is of another input, or of other chunks; rerun without "
                         "--resume to start again")
    writable_folder(folder, "--checkpoint-dir")
    return folder, fingerprint


CHECKPOINT_SOURCE = "source.json"


def _source_fingerprint(source, chunk_size):
    """What a histogram checkpoint must match: the input (path or URL, bytes, a local file's modification time) and
    the blocks it saves."""
    path = source.path
    return {"path": str(path.resolve() if is_local(path) else path), "shape": list(source.shape),
            "blocks": list(saved_block_shape(source.chunk_shape(chunk_size))), "bytes": source.input_bytes,
            "mtime_ns": path.stat().st_mtime_ns if is_local(path) else None}


def _read_json(path):
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _start_checkpoint(folder, fingerprint, resume):
    """Empty the checkpoint folder unless resuming; record what it is a checkpoint of."""
    if resume:
        saved = sum(1 for p in folder.glob("r*-c*") if p.is_dir())
        log.info("resuming the colour histogram: %d block histogram(s) saved in %s", saved, folder)
    else:
        remove_tree(folder)
        folder.mkdir(parents=True)
    (folder / CHECKPOINT_SOURCE).write_text(json.dumps(fingerprint))


# ------------------------------------------------------------------------------------------ palette

@dataclasses.dataclass
class Palette:
    """The palette of a compressed image and the palette index of every distinct colour.

    Attributes
    ----------
    colours : ndarray (p, C) uint8, distinct entries, sorted
    code_labels : ndarray (M,) uint8 or uint16, palette index of each distinct colour code
    fit : KMeansResult, GMMResult, or None (k-means on an image with no more distinct colours than k)
    """

    colours: np.ndarray
    code_labels: np.ndarray
    fit: object = None


def fit_palette(codes, counts, channels, settings):
    """Fit a palette of at most ``settings.k`` colours to an exact colour histogram.

    With RGBA, fully transparent pixels (code 0) keep a palette entry of their own when k >= 2, and the
    other colours share the remaining k - 1 entries.

    Parameters
    ----------
    codes : ndarray (M,) uint32, sorted distinct colour codes
    counts : ndarray (M,) int64, pixels of each colour
    channels : int, 3 or 4
    settings : CompressSettings
    """
    colours = decode_colours(codes, channels).astype(np.float64)
    transparent = channels == 4 and settings.k >= 2 and codes[0] == 0
    fitted = slice(1, None) if transparent else slice(None)
    k = settings.k - int(transparent)
    points, weights = colours[fitted], counts[fitted].astype(np.float64)
    fit = None
    progress = IterationProgress("EM" if settings.method == "gmm" else "k-means", settings.max_iter,
                                 settings.progress_seconds)
    if settings.method == "gmm":
        with progress:
            fit = fit_gmm(points, weights, k=min(k, len(points)), init=settings.em_init, max_iter=settings.max_iter,
                          tol=settings.em_tol, reg_covar=settings.reg_covar, seed=settings.seed, progress=progress)
        centres, labels = fit.mixture.means, most_likely_component(points, fit.mixture)
    elif len(points) <= k:
        log.info("the image has %d distinct colour(s), no more than k=%d: using them all", len(codes), settings.k)
        centres, labels = points, np.arange(len(points))
    else:
        with progress:
            fit = fit_kmeans(points, weights, k=k, method=settings.method, max_iter=settings.max_iter,
                             tol=settings.tol, seed=settings.seed, batch_size=settings.batch_size, progress=progress)
        centres, labels = fit.centres, np.asarray(fit.labels.compute())
    if transparent:
        centres = np.vstack([np.zeros((1, 4)), centres])
        labels = np.concatenate([[0], labels + 1])
    entries, code_labels = unique_palette(centres, labels, channels)
    return Palette(entries, code_labels, fit)


def unique_palette(centres, labels, channels):
    """Round centres to 8-bit colours and drop duplicate and unused entries.

    Parameters
    ----------
    centres : ndarray (k, C) float64
    labels : ndarray (M,) int, centre index of each distinct colour

    Returns
    -------
    colours : ndarray (p, C) uint8, sorted, p <= k
    labels : ndarray (M,) uint8 (p <= 256) or uint16, palette index of each distinct colour
    """
    rounded = np.clip(np.rint(centres), 0, 255).astype(np.uint8)
    if channels == 4:
        rounded[rounded[:, 3] == 0] = 0  # every fully transparent entry is the same entry
    used = np.unique(labels)
    colours, inverse = np.unique(rounded[used], axis=0, return_inverse=True)
    remap = np.zeros(len(centres), dtype=np.int64)
    remap[used] = inverse.ravel()
    dtype = np.uint8 if len(colours) <= 256 else np.uint16
    return colours, remap[labels].astype(dtype)


def squared_error(codes, counts, channels, palette):
    """Total squared error of the compressed image, from the histogram (exact, no pass over pixels)."""
    diff = decode_colours(codes, channels).astype(np.float64) - palette.colours[palette.code_labels]
    return float(counts @ np.einsum("mc,mc->m", diff, diff))


# ------------------------------------------------------------------------------------------ the job

def run(settings, job_plan, client):
    """Compress one image on ``client``; write the outputs and return the report (a dict)."""
    source = job_plan.source
    seconds = {}
    started = time.perf_counter()
    image = source.to_dask(settings.chunk_size)
    height, width, channels = image.shape
    log.info("input %s: %dx%d, %d channels, %s chunks", source.path, height, width, channels,
             "x".join(map(str, image.chunksize[:2])))

    step = thumbnail_step(height, width)
    advice = "give the workers more memory or use smaller chunks (--chunk-size)"

    if job_plan.checkpoint is not None:
        _start_checkpoint(job_plan.checkpoint, job_plan.checkpoint_source, settings.resume)

    def histogram_pass(attempt):
        pixels = image if attempt == 1 else source.to_dask(settings.chunk_size)
        histogram = (colour_histogram(pixels) if job_plan.checkpoint is None else
                     checkpointed_histogram(source, image.chunksize[:2], job_plan.checkpoint))
        wanted = [histogram] + ([pixels[::step, ::step]] if job_plan.compare else [])
        return computed(client, wanted, "colour-histogram", settings.progress_seconds)

    histogram, *thumbnail = with_rebuilds(histogram_pass, "colour histogram", advice)
    codes, counts = histogram["codes"], histogram["counts"]
    seconds["histogram"] = _lap(started, seconds)
    log.info("colour histogram: %d distinct colours in %d pixels", len(codes), counts.sum())

    # The fit scatters the distinct colours itself, so a rerun rebuilds them.
    palette = with_rebuilds(lambda attempt: fit_palette(codes, counts, channels, settings), "fitting the palette",
                            advice)
    seconds["fit"] = _lap(started, seconds)
    _log_fit(palette.fit, settings.method)

    lookup = ColourLookup(codes, palette.code_labels, channels)

    def labels_of(attempt):
        # The lookup table (16 MiB for RGB) goes to every worker once instead of into the graph.
        lookup_on_workers = client.scatter(lookup, broadcast=True, hash=False)
        pixels = image if attempt == 1 else source.to_dask(settings.chunk_size)
        return pixels.map_blocks(apply_lookup, lookup_on_workers, drop_axis=2, dtype=palette.code_labels.dtype,
                                 token="palette-labels")

    with staged_outputs() as stage:
        output = stage(job_plan.out)
        with_rebuilds(lambda attempt: _write_output(output, labels_of(attempt), palette, settings, client),
                      "writing the output", advice)
        seconds["write"] = _lap(started, seconds)
        if job_plan.compare:
            small = thumbnail[0]
            titles = (f"Original ({width}x{height})", f"Compressed ({len(palette.colours)} colours)")
            side_by_side(small, palette.colours[lookup(small)], titles).save(stage(job_plan.compare))
            seconds["compare"] = _lap(started, seconds)
        sq_error = squared_error(codes, counts, channels, palette)
        report = _report(settings, source, palette, sq_error, int(counts.sum()) * channels, seconds, output)
        if job_plan.save_model:
            save_mixture(stage(job_plan.save_model), palette.fit.mixture,
                         {"input": str(source.path), "channels": channels, "seed": settings.seed,
                          "mean_loglik_per_pixel": palette.fit.mean_loglik})
        if job_plan.report:
            stage(job_plan.report).write_text(json.dumps(report, indent=2) + "\n")
    if job_plan.checkpoint is not None:
        remove_tree(job_plan.checkpoint)  # the job is done: nothing to resume
    psnr = "lossless" if report["psnr_db"] is None else f"PSNR {report['psnr_db']:.2f} dB"
    log.info("wrote %s: %d colours, %s, %.1f s", job_plan.out, len(palette.colours), psnr,
             time.perf_counter() - started)
    return report


def _preload():
    """Import dask.array (0.3 s the first time) and load the compiled loops (0.6 s). A failure here is only logged
    at debug level: the job meets it again, with its own message, where it needs what failed."""
    try:
        import dask.array  # noqa: F401

        from .compiled import warm_up

        warm_up()
    except Exception as e:
        log.debug("preloading failed: %s", e)


def _log_fit(fit, method):
    if isinstance(fit, GMMResult):
        log.info("EM: %d iterations, converged=%s, mean log-likelihood %.4f per pixel, %d component(s) re-seeded",
                 fit.iterations, fit.converged, fit.mean_loglik, fit.reseeded)
    elif fit is not None:
        log.info("k-means (%s): %d iterations, converged=%s, inertia %.6g", method, fit.iterations,
                 fit.converged, fit.inertia)


def apply_lookup(block, lookup):
    """Palette indices ``(h, w)`` of one image block ``(h, w, C)`` through a :class:`ColourLookup`."""
    return lookup(block)


def _lap(started, seconds):
    return round(time.perf_counter() - started - sum(seconds.values()), 3)


def _write_output(path, labels, palette, settings, client):
    kind = path.suffix.lower()

    def client_compute(parts):
        return computed(client, parts, "palette-labels", settings.progress_seconds)

    if kind == ".png":
        write_png(path, client_compute([labels])[0], palette.colours)
    elif kind in (".tif", ".tiff"):
        write_tiff(path, labels, palette.colours, settings.tile_size, client_compute)
    else:
        attributes = {"method": settings.method, "k": settings.k, "seed": settings.seed,
                      "mixlib": __version__}
        write_zarr(path, labels, palette.colours, settings.tile_size, attributes, client_compute)


def _report(settings, source, palette, sq_error, n_values, seconds, output):
    mse = sq_error / n_values
    fit = palette.fit
    report = {
        "input": str(source.path),
        "frames": source.frames,  # of an animation or multi-page file; only the first is compressed
        "method": settings.method,
        "k_requested": settings.k,
        "k_effective": len(palette.colours),
        "iterations": fit.iterations if fit else 0,
        "converged": fit.converged if fit else True,
        "mse": mse,
        "psnr_db": 10 * math.log10(255.0 ** 2 / mse) if mse > 0 else None,  # None: lossless
        "seconds": seconds,
        "input_bytes": source.input_bytes,
        "output_bytes": tree_bytes(output),
        "palette": palette.colours.tolist(),
        "seed": settings.seed,
        "versions": _versions(),
    }
    if isinstance(fit, GMMResult):
        pixels = n_values // source.channels
        mixture = fit.mixture
        report.update({
            "mixture": {"weights": mixture.weights.tolist(), "means": mixture.means.tolist(),
                        "covariances": mixture.covariances.tolist()},
            "mean_loglik_per_pixel": fit.mean_loglik,
            "bic": bic(fit.mean_loglik, pixels, len(mixture.weights), mixture.means.shape[1]),
            "em_iterations": fit.iterations,
            "reseeded_components": fit.reseeded,
        })
    else:
        report.update({"inertia": fit.inertia if fit else 0.0,
                       "tasks_per_iteration": fit.tasks_per_iteration if fit else 0})
    return report


def _versions():
    """Versions of Python and of the packages the job ran on (from their metadata: importing zarr and tifffile
    only to read their versions took 0.15 s)."""
    from importlib.metadata import version

    packages = ("numpy", "scipy", "numba", "dask", "distributed", "pillow", "zarr", "tifffile")
    return {"mixlib": __version__, "python": platform.python_version(), **{p: version(p) for p in packages}}
