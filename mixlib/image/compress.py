"""``python -m jobs.compress``: quantise an RGB(A) image to k colours by k-means or a Gaussian mixture on its exact
colour histogram.

The job checks everything first (:func:`plan`), then runs in named phases: the colour histogram, a tree reduction
over the image's chunks (:func:`histogram_phase`) -> the palette fitted to the distinct colours weighted by their
counts (:func:`fit_phase`) -> a blockwise pass that maps every pixel to its palette entry through a lookup table and
writes the output (:func:`labels_and_write_phase`) -> the report (:func:`report_phase`) -> rename into place.
"""

import dataclasses
import functools
import json
import logging
import math
import platform
import threading
import time
from pathlib import Path

from .. import __version__
from ..core.checkpoint import BlockCheckpoint
from ..core.cli import JobOptions
from ..core.cluster import with_rebuilds
from ..core.config import option
from ..core.errors import InputError, SomeInputsFailed
from ..core.outputs import check_output, nearest_existing, optional_output, staged_outputs, writable_folder
from ..core.progress import IterationProgress, computed
from ..core.storage import is_local, location, tree_bytes
from ..fit.gmm import save_mixture
from .batch import (ImageOptions, JsonLines, below_min_psnr, expand_inputs, image_colours, is_batch,
                    larger_than_input, run_batch, shared_histogram)
from .colors import (ColourLookup, checkpointed_histogram, colour_histogram, image_histogram, merge_histograms,
                     saved_block_shape)
from .dither import (DITHER_METHODS, NearestSearch, dither_row_of_chunks, dithered, label_dtype, ordered_thresholds,
                     squared_error_of)
from .palette import fit_palette, fit_to_psnr, palette_psnr, parse_colours, squared_error
from .palettes import GivenPalette, apply_palette, load_palette, save_palette
from .quantise import MAX_TARGET_PSNR, mapped_frames
from .readers import PILLOW_MAX_PIXELS, Frames, inspect_image, read_frames
from .writers import (FRAME_FIELD, OUTPUT_SUFFIXES, PNG_MAX_COLOURS, check_animation_output, check_gif_alpha,
                      check_png_size, frame_paths, side_by_side, thumbnail_step, write_animation, write_labels)

log = logging.getLogger("mixlib")



@dataclasses.dataclass(frozen=True)
class CompressSettings(JobOptions):
    """Settings of ``python -m jobs.compress`` (keys of configs/compress.toml)."""

    input: tuple = option(("sample:china.jpg",), "image(s): a file Pillow reads, an RGB(A) TIFF, a Zarr array "
                                                 "(H, W, 3|4) uint8, sample:NAME for scikit-learn's photos; several, "
                                                 "a folder, a quoted glob or @LIST.txt make a batch",
                          group="input and output")
    out: str = option("outputs/compress/{stem}-k{k}.png", "output .png (palette), .tif (tiled) or .zarr; "
                                                          "{stem}, {k} and {method} are filled in",
                                                          group="input and output")
    compare: str = option("", "write the original and the compressed image side by side here ('' for none)",
                          group="input and output")
    report: str = option("", "write a JSON report here ('' for none); a batch: a .jsonl, a record per input",
                         group="input and output")
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
    fixed_colours: tuple = option((), "colours always in the palette, counted in --k (k-means): '#rrggbb' or "
                                      "'#rrggbbaa', comma-separated or the flag given again; the other colours are "
                                      "fitted around them, which never move", group="model")
    palette: str = option("", "apply this palette instead of fitting one: a .json palette (--palette-out), a palette "
                              "PNG, or an image of at most 256 colours; every output carries it whole, in order",
                          group="model")
    palette_out: str = option("", "write the palette here, .json or a .png swatch: a single image's ({stem} and {k} "
                                  "are filled in) or a batch's --shared-palette", group="input and output")
    shared_palette: bool = option(False, "a batch: one palette fitted to the colour histogram of all its images "
                                         "together, carried whole and in order by every output", group="model")
    target_psnr: float = option(0.0, "the fewest colours, up to --k, whose palette reaches this PSNR in dB (exact, "
                                     "from the colour histogram; 0: --k colours)", minimum=0.0,
                                maximum=MAX_TARGET_PSNR, group="model")
    min_psnr: float = option(0.0, "an image whose palette of --k colours stays below this PSNR in dB is not written "
                                  "but skipped, as pngquant's --quality min (0: write every image)", minimum=0.0,
                             maximum=MAX_TARGET_PSNR, group="model")
    dither: str = option("none", "floyd-steinberg: each pixel's error carried on to its neighbours, in raster order "
                                 "(the same pixels whatever the chunks); ordered: an 8x8 Bayer pattern, blockwise",
                         choices=DITHER_METHODS, group="model")
    dither_level: float = option(1.0, "the share of the error carried on (floyd-steinberg) or of the pattern's "
                                      "amplitude (ordered), 0..1", minimum=0.0, maximum=1.0, group="model")
    skip_if_larger: bool = option(False, "an output larger than its input file is not written but skipped",
                                  group="input and output")
    save_model: str = option("", "gmm: write the fitted mixture here (.json) for jobs.sample ('' for none)",
                             group="input and output")
    checkpoint_dir: str = option("", "Zarr or TIFF input: keep the colour histogram of each block of 2 x 4 chunks "
                                     "in this folder (shared with the workers; a path or an fsspec URL) as the "
                                     "pass goes, so that --resume continues a killed job", group="input and output")
    resume: bool = option(False, "continue the colour histogram of a killed job from --checkpoint-dir; a batch: "
                                 "keep the outputs already written and compress the rest",
                          group="input and output")
    seed: int = option(0, "random seed (k-means++ and mini-batch draws)", minimum=0, group="model")
    chunk_size: int = option(2048, "Dask chunk side in pixels (rounded to the input's own chunks)", minimum=16)
    tile_size: int = option(1024, "tile side of TIFF output and chunk side of Zarr output (multiple of 16)",
                            minimum=16)
    fail_fast: bool = option(False, "a batch: stop at the first input that fails", group="input and output")
    task_pixels: int = option(1 << 26, "a batch: images up to this many pixels are compressed inside one task each; "
                                       "larger ones take the chunked path of a single image", minimum=1)
    local_pixels: int = option(1 << 22, "a single image decoded in memory with up to this many pixels is compressed "
                                        "in this process, without a cluster or dashboard (0: always start one)",
                               minimum=0)
    max_pixels: int = option(PILLOW_MAX_PIXELS, "largest image Pillow may decode (decompression-bomb guard)",
                             minimum=1, group="input and output")


@dataclasses.dataclass
class Plan:
    """What a checked job will read and write."""

    source: object
    out: Path
    compare: Path | None
    report: Path | None
    save_model: Path | None
    checkpoint: BlockCheckpoint | None  # of the colour histogram, for a Zarr or TIFF input read chunk by chunk
    palette_out: Path | None = None
    given_palette: object = None  # ndarray (p, 3|4) uint8 of --palette, applied instead of a fit
    frames: Frames | None = None  # of an animation or multi-page file, decoded: compressed with one palette
    frame_outputs: list | None = None  # one file per frame: --out with {frame} filled in


def plan(settings):
    """Check settings, inputs and outputs before any heavy work; raise InputError on the first problem. Several
    inputs, a folder, a glob or a list make a batch (:func:`plan_batch`)."""
    if settings.tile_size % 16:
        raise InputError(f"--tile-size is {settings.tile_size}; TIFF tiles need a multiple of 16")
    if not settings.input:
        raise InputError("no input: give an image, several, a folder, a quoted glob or @LIST.txt")
    fixed_colours(settings)
    given = given_palette(settings)
    if settings.shared_palette and settings.palette:
        raise InputError("--shared-palette fits one palette and --palette applies one: give one of them")
    if settings.shared_palette and not is_batch(settings.input):
        raise InputError("--shared-palette is for several inputs (a folder, a glob, a list)")
    if is_batch(settings.input):
        return plan_batch(settings, given)
    name = settings.input[0]
    stem = Path(name.removeprefix("sample:")).stem
    templates = ((settings.out, "--out"), (settings.compare, "--compare"), (settings.report, "--report"),
                 (settings.save_model, "--save-model"), (settings.palette_out, "--palette-out"))
    out, compare, report, save_model, palette_out = (_filled(template, flag, settings, stem) if template else None
                                                     for template, flag in templates)
    if out is None:
        raise InputError("--out is empty; give an output path ending in .png, .tif, .zarr or .gif")
    check_palette_size(out, settings.k)
    if save_model is not None and settings.method != "gmm":
        raise InputError("--save-model writes a Gaussian mixture: use it with --method gmm")
    for path, suffixes in ((out, OUTPUT_SUFFIXES), (compare, (".png",)), (report, (".json",)),
                           (save_model, (".json",)), (palette_out, (".json", ".png"))):
        if path is not None:
            check_output(path, settings.overwrite, suffixes)
    named = [p for p in (out, compare, report, save_model, palette_out) if p is not None]
    if len(set(named)) < len(named):
        raise InputError("--out, --compare, --report, --save-model and --palette-out must be different files")
    source = inspect_image(name, settings.max_pixels)
    image_colours(fixed_colours(settings), source.channels, name)
    height, width, _ = source.shape
    check_png_size(out, height, width)
    frames, frame_outputs = _planned_frames(settings, source, out)
    if source.kind == "pillow" or frames is not None:
        check_gif_alpha(out, [source.pixels] if frames is None else frames.pixels)
    if frames is not None and settings.checkpoint_dir:
        raise InputError("--checkpoint-dir is for one large image; an animation is compressed in memory")
    job_plan = Plan(source, out, compare, report, save_model, _checkpoint(settings, source), palette_out, given,
                    frames, frame_outputs)
    _preload_for(settings, job_plan)
    return job_plan


def _preload_for(settings, job_plan):
    """Load in a thread the numba loops that this process will need while the job goes on (see
    :func:`_start_preload`): the dithering loops to dither; the colour and fit loops when the embedded cluster's
    threaded workers will run tasks, or when they are not compiled ahead of time for this thread
    (:mod:`mixlib.core.loops`). Worker processes load numba's loops in their first task."""
    from ..fit.loops import LOOPS as fit_loops
    from .loops import LOOPS as colour_loops

    dithering = settings.dither != "none"
    on_cluster = not runs_here(settings, job_plan) or (
        job_plan.frames is None and bool(settings.scheduler or settings.performance_report))
    threaded_workers = on_cluster and not settings.scheduler and not settings.processes
    ahead_of_time = colour_loops.compiled() is not None and fit_loops.compiled() is not None
    if dithering or threaded_workers or not ahead_of_time:
        _start_preload(dithering, colours_and_fits=threaded_workers or not ahead_of_time)


def _planned_frames(settings, source, out):
    """``(frames, frame_outputs)`` of an input of several frames (decoded, :func:`~mixlib.image.readers.
    read_frames`) and of an ``--out`` with ``{frame}`` (one file per frame, each checked); ``(None, None)`` for one
    image written whole; InputError for an output that cannot hold the frames."""
    per_frame = FRAME_FIELD in str(out)
    if source.frames == 1 and not per_frame:
        return None, None
    frames = read_frames(source.path, settings.max_pixels) if source.frames > 1 else \
        Frames([source.read_pixels()], None, None)
    check_animation_output(out, frames, source.path)
    if not per_frame:
        return frames, None
    outputs = frame_paths(out, len(frames.pixels))
    for path in outputs:
        check_output(path, settings.overwrite, OUTPUT_SUFFIXES)
        check_png_size(path, *frames.pixels[0].shape[:2])
    return frames, outputs


def check_palette_size(out, k):
    """Refuse ``--k`` above what a palette PNG or GIF output holds."""
    if out.suffix.lower() in (".png", ".gif") and k > PNG_MAX_COLOURS:
        raise InputError(f"--k {k} does not fit a {out.suffix[1:].upper()} palette (at most {PNG_MAX_COLOURS}); "
                         "write .tif or .zarr instead")


def given_palette(settings):
    """The entries ``(p, 3|4)`` uint8 of ``--palette`` (:func:`mixlib.image.palettes.load_palette`), or None;
    InputError for a file that is not one, or with the options that fit a palette."""
    if not settings.palette:
        return None
    clashes = [flag for flag, value in (("--target-psnr", settings.target_psnr),
                                        ("--fixed-colours", settings.fixed_colours),
                                        ("--save-model", settings.save_model)) if value]
    if clashes:
        raise InputError(f"--palette applies a palette as it is; leave out {' and '.join(clashes)}, which fit one")
    return load_palette(location(settings.palette, "--palette"))


def fixed_colours(settings):
    """``--fixed-colours`` parsed, ``(n, 4)`` uint8 (:func:`mixlib.image.palette.parse_colours`); InputError for a
    colour that does not parse, more colours than ``--k``, or ``--method gmm``."""
    try:
        colours = parse_colours(settings.fixed_colours)
    except ValueError as e:
        raise InputError(f"--fixed-colours: {e}") from None
    if len(colours) > settings.k:
        raise InputError(f"--fixed-colours: {len(colours)} colours do not fit in --k {settings.k}; raise --k")
    if len(colours) and settings.method == "gmm":
        raise InputError("--fixed-colours needs a k-means palette: use --method lloyd or minibatch")
    return colours


def _filled(template, flag, settings, relpath):
    """The location an output template names for an input: ``{relpath}``, ``{stem}`` (its last part), ``{k}`` and
    ``{method}`` filled in; InputError for another placeholder."""
    fill = {"stem": Path(relpath).name, "relpath": relpath, "k": settings.k, "method": settings.method,
            "frame": FRAME_FIELD}  # filled in per frame later (frame_paths)
    try:
        return location(template.format(**fill), flag)
    except (KeyError, ValueError, IndexError) as e:
        raise InputError(f"{flag} has a bad placeholder ({e}); use {{relpath}}, {{stem}}, {{k}}, {{method}} or "
                         "{frame}") from None


def worker_paths(job_plan):
    """What the workers touch themselves: ``(reads, writes)``, a Zarr or TIFF input they read chunk by chunk, and
    the folders of a Zarr output and of the histogram checkpoint they write into; a batch's workers read its inputs
    and write its outputs (a few of each are checked)."""
    if isinstance(job_plan, BatchPlan):
        return batch_worker_paths(job_plan)
    if job_plan.frames is not None:
        return [], []  # an animation is compressed and written by the job's process
    reads = [job_plan.source.path] if job_plan.source.kind != "pillow" else []
    writes = [job_plan.out.parent] if job_plan.out.suffix.lower() == ".zarr" else []
    if job_plan.checkpoint is not None:
        writes.append(job_plan.checkpoint.folder)
    return reads, writes


def _checkpoint(settings, source):
    """The checkpoint of the colour histogram's blocks, or None; InputError when it cannot serve this input."""
    if not settings.checkpoint_dir:
        if settings.resume:
            raise InputError("--resume continues from --checkpoint-dir: give the folder of the killed job")
        return None
    if source.kind == "pillow":
        raise InputError("--checkpoint-dir needs a Zarr or TIFF input (read chunk by chunk); a decoded image is "
                         "simply read again")
    checkpoint = BlockCheckpoint(location(settings.checkpoint_dir, "--checkpoint-dir"),
                                 _source_fingerprint(source, settings.chunk_size), "another input, or other chunks")
    checkpoint.check(settings.resume, "--checkpoint-dir")
    return checkpoint


def _source_fingerprint(source, chunk_size):
    """What a histogram checkpoint must match: the input (path or URL, bytes, a local file's modification time) and
    the blocks it saves."""
    path = source.path
    return {"path": str(path.resolve() if is_local(path) else path), "shape": list(source.shape),
            "blocks": list(saved_block_shape(source.chunk_shape(chunk_size))), "bytes": source.input_bytes,
            "mtime_ns": path.stat().st_mtime_ns if is_local(path) else None}


# ------------------------------------------------------------------------------------------ batches

@dataclasses.dataclass
class BatchPlan:
    """A checked batch: the images to compress, those whose output is already written (``--resume``), the report.

    Attributes
    ----------
    jobs : list of (str, str), input name and output of every image to compress
    skipped : list of (str, str), the same for the images whose output exists (kept with ``--resume``)
    others : int, files in the folders and globs without an image suffix (left alone)
    report : Path or None, the JSON-lines report
    options : ImageOptions
    palette_out : Path or None, where the ``--shared-palette`` goes
    """

    jobs: list
    skipped: list
    others: int
    report: Path | None
    options: ImageOptions
    palette_out: Path | None = None


def plan_batch(settings, given=None):
    """Check a batch before any work: its options, its inputs (expanded), its outputs (distinct, writable, not
    there unless ``--overwrite`` or ``--resume``). ``given``: the ``--palette`` entries :func:`plan` read, or None."""
    for flag, value in (("--compare", settings.compare), ("--save-model", settings.save_model),
                        ("--checkpoint-dir", settings.checkpoint_dir),
                        ("--palette-out", settings.palette_out and not settings.shared_palette)):
        if value:
            raise InputError(f"{flag} is for a single image (--palette-out: or a batch's --shared-palette); a batch "
                             "writes its outputs and a --report .jsonl")
    palette_out = optional_output(settings.palette_out, settings.overwrite, (".json", ".png"), "--palette-out")
    inputs, others = expand_inputs(settings.input)
    if not inputs:
        raise InputError(f"the inputs name no image ({others} other file(s)); give image files, folders of them, "
                         "a quoted glob or @LIST.txt")
    outputs = _batch_outputs(settings, inputs)
    report = optional_output(settings.report, settings.overwrite or settings.resume, (".jsonl",), "--report")
    jobs, skipped, existing = [], [], []
    for item, out in zip(inputs, outputs):
        if out.exists() and not settings.overwrite:
            (skipped if settings.resume else existing).append((item.name, str(out)))
        else:
            jobs.append((item.name, str(out)))
    if existing:
        raise InputError(f"output {existing[0][1]} exists ({len(existing)} in all); pass --overwrite to replace "
                         "them or --resume to keep them and compress the rest")
    _start_preload(settings.dither != "none")
    log.info("batch: %d image(s) to compress, %d already written, %d other file(s) left alone", len(jobs),
             len(skipped), others)
    return BatchPlan(jobs, skipped, others, report, _image_options(settings, given), palette_out)


def _batch_outputs(settings, inputs):
    """The output of every input from the ``--out`` template; two inputs that would write one output, an unknown
    format or a folder that cannot be written are InputError."""
    writers, checked = {}, set()
    outputs = []
    for item in inputs:
        out = _filled(settings.out, "--out", settings, item.relpath)
        if out in writers:
            raise InputError(f"{writers[out]} and {item.name} would both write {out}: put {{relpath}} in --out "
                             "(e.g. --out out/{relpath}.png)")
        writers[out] = item.name
        if out.suffix.lower() not in OUTPUT_SUFFIXES:
            raise InputError(f"output {out} has an unknown format; use one of {', '.join(OUTPUT_SUFFIXES)}")
        check_palette_size(out, settings.k)
        probed = nearest_existing(out.parent) if is_local(out) else out.parent  # mirrored trees share their root
        if probed not in checked:
            checked.add(probed)
            writable_folder(out.parent, "--out folder")
        outputs.append(out)
    return outputs


def _image_options(settings, given=None):
    return ImageOptions(k=settings.k, method=settings.method, max_iter=settings.max_iter, tol=settings.tol,
                        batch_size=settings.batch_size, em_init=settings.em_init, em_tol=settings.em_tol,
                        reg_covar=settings.reg_covar, seed=settings.seed, chunk_size=settings.chunk_size,
                        tile_size=settings.tile_size, max_pixels=settings.max_pixels,
                        task_pixels=settings.task_pixels, attributes=output_attributes(settings),
                        target_psnr=settings.target_psnr, min_psnr=settings.min_psnr,
                        skip_if_larger=settings.skip_if_larger, fixed_colours=fixed_colours(settings),
                        palette=given, palette_source=settings.palette, dither=settings.dither,
                        dither_level=settings.dither_level, overwrite=settings.overwrite)


def batch_worker_paths(batch_plan, most=4):
    """``(reads, writes)`` to check on a remote cluster: a few local inputs and the folders of a few outputs."""
    reads = [location(name, "input") for name, _ in batch_plan.jobs[:most]]
    writes = sorted({location(out, "--out").parent for _, out in batch_plan.jobs}, key=str)[:most]
    return reads, writes


def run_batch_job(settings, job_plan, client):
    """Compress a batch on ``client``: a record per input in the report as it goes, one summary line at the end;
    SomeInputsFailed (exit status 4) when an input failed."""
    started = time.perf_counter()
    report = JsonLines(job_plan.report)
    try:
        for name, out in job_plan.skipped:
            report.write({"input": name, "output": out, "status": "skipped", "reason": "its output exists (--resume)"})
        window = max(2, 2 * sum(client.nthreads().values()))
        options = _shared_palette(settings, job_plan, client, window) if settings.shared_palette else \
            job_plan.options
        with IterationProgress("compress", len(job_plan.jobs), settings.progress_seconds) as progress:
            totals = run_batch(client, job_plan.jobs, options, report=report, progress=progress,
                               window=window, fail_fast=settings.fail_fast,
                               on_deferred=functools.partial(_chunked, settings, options, client))
    finally:
        report.close()
    totals["skipped"] += len(job_plan.skipped)
    seconds = time.perf_counter() - started
    log.info("batch: %d written, %d skipped, %d failed; %.1f megapixels, %s in, %s out; %.2f images/s",
             totals["written"], totals["skipped"], totals["failed"], totals["megapixels"],
             _size_text(totals["bytes_in"]), _size_text(totals["bytes_out"]), totals["written"] / seconds)
    if totals["failed"]:
        where = f"; {job_plan.report} lists them" if job_plan.report else "; --report PATH.jsonl lists them"
        raise SomeInputsFailed(f"{totals['failed']} of {len(job_plan.jobs) + len(job_plan.skipped)} inputs "
                               f"failed{where}")
    return totals


def _shared_palette(settings, job_plan, client, window):
    """The batch's options with ``--shared-palette``'s palette to apply: fitted to the histogram of every image
    (those kept by ``--resume`` too, so that a resumed batch fits the same palette), written to ``--palette-out``."""
    everything = job_plan.jobs + job_plan.skipped
    with IterationProgress("histogram", len(everything), settings.progress_seconds) as progress:
        found = shared_histogram(client, everything, job_plan.options, window=window, progress=progress)
    if found is None:
        return job_plan.options  # no image can be read: the compress pass records each
    codes, counts, channels = found
    log.info("shared palette: %d distinct colours in %d pixels of %d images", len(codes), counts.sum(),
             len(everything))
    palette, _ = fit_phase(settings, codes, counts, channels)
    if job_plan.palette_out is not None:
        with staged_outputs() as stage:
            save_palette(stage(job_plan.palette_out), palette.colours)
    return dataclasses.replace(job_plan.options, palette=palette.colours, palette_source="the shared palette",
                               fixed_colours=None, target_psnr=0.0)


def _chunked(settings, options, client, record):
    """Compress an image too large for one task by the chunked path of a single-image job; its batch record."""
    started = time.perf_counter()
    try:
        source = inspect_image(record["input"], settings.max_pixels)
        plan_of_one = Plan(source, location(record["output"], "--out"), None, None, None, None,
                           given_palette=options.palette)
        report = run(settings, plan_of_one, client)
    except InputError as e:
        return {**record, "status": "failed", "reason": str(e)}
    return {**record, "status": report["status"], "reason": report["reason"], "distinct_colours": None,
            "k": report["k_effective"], "iterations": report["iterations"], "psnr_db": report["psnr_db"],
            "palette_psnr_db": report["palette_psnr_db"],
            "bytes_in": report["input_bytes"], "bytes_out": report["output_bytes"],
            "seconds": round(time.perf_counter() - started, 3)}


def _size_text(count):
    """A byte count for people: '3.2 MB'."""
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000


# ------------------------------------------------------------------------------------------ the job

ADVICE = "give the workers more memory or use smaller chunks (--chunk-size)"
IN_PROCESS_COLOURS = 1 << 18  # the fits' block of points (chunk_rows): a smaller histogram is one block
# The report's names of a fit's statistics: a point is a distinct colour weighted by its pixels.
REPORT_NAMES = {"mean_loglik": "mean_loglik_per_pixel"}


def run(settings, job_plan, client):
    """Compress one image on ``client`` in named phases (histogram, fit, labels and write, report), or in this
    process when ``client`` is None (:func:`runs_here`); write the outputs and return the report (a dict). A batch
    runs :func:`run_batch_job`."""
    if isinstance(job_plan, BatchPlan):
        return run_batch_job(settings, job_plan, client)
    source, started = job_plan.source, time.perf_counter()
    if job_plan.frames is not None:
        frames = job_plan.frames.pixels
        log.info("input %s: %d frames of %dx%d, %d channels", source.path, len(frames), *frames[0].shape)
        histogram = functools.partial(_histogram_here, settings, job_plan, frames)
        write = functools.partial(_write_frames, settings, job_plan)
        return _phases(settings, job_plan, histogram, write, started, in_process=True)
    if client is None:
        pixels = source.read_pixels()
        log.info("input %s: %dx%d, %d channels", source.path, *pixels.shape)
        histogram = functools.partial(_histogram_here, settings, job_plan, [pixels])
        write = functools.partial(_write_here, settings, pixels, source.icc_profile)
    else:
        image = source.to_dask(settings.chunk_size)
        log.info("input %s: %dx%d, %d channels, %s chunks", source.path, *image.shape,
                 "x".join(map(str, image.chunksize[:2])))
        histogram = functools.partial(histogram_phase, settings, job_plan, image, client)
        write = functools.partial(labels_and_write_phase, settings, job_plan, image, client=client)
    return _phases(settings, job_plan, histogram, write, started, in_process=client is None)


def runs_here(settings, job_plan):
    """Whether a job is small enough to run in this process without a cluster (:func:`mixlib.core.cli.job_main`
    asks): one image decoded in memory, of at most ``--local-pixels`` pixels, with no histogram checkpoint. Such a
    job takes a few seconds at most, too few to watch on a dashboard, and a cluster's start and stop would take
    longer than its work; it gives the same outputs as on a cluster."""
    if isinstance(job_plan, BatchPlan) or job_plan.checkpoint is not None:
        return False
    if job_plan.frames is not None:
        return True  # decoded, and compressed in this process with or without a cluster
    if job_plan.source.kind != "pillow":
        return False
    height, width, _ = job_plan.source.shape
    return height * width <= settings.local_pixels


def _phases(settings, job_plan, histogram, write, started, in_process):
    """The phases of :func:`run` after the input is open: ``histogram() -> (codes, counts, thumbnail)`` and
    ``write(lookup, palette, output)`` (which returns the squared error of the written pixels when dithered, else
    None), the fit in this process (``in_process``) or as :func:`fit_phase` decides."""
    seconds = {}
    codes, counts, thumbnail = histogram()
    seconds["histogram"] = _lap(started, seconds)
    channels = job_plan.source.channels
    if job_plan.given_palette is not None:
        palette, tried = apply_palette(codes, channels, job_plan.given_palette, settings.palette), []
        log.info("%s", palette.fit.describe())
    else:
        palette, tried = fit_phase(settings, codes, counts, channels, on_cluster=not in_process)
    seconds["fit"] = _lap(started, seconds)
    lookup = ColourLookup(codes, palette.code_labels, channels)
    skipped = below_min_psnr(settings.min_psnr, palette_psnr(codes, counts, channels, palette))
    with staged_outputs() as stage:
        output_bytes = written_error = None
        if skipped is None:
            finals = job_plan.frame_outputs or [job_plan.out]
            staged = [stage(final) for final in finals]
            written_error = write(lookup, palette, staged if job_plan.frame_outputs else staged[0])
            seconds["write"] = _lap(started, seconds)
            output_bytes = sum(tree_bytes(path) for path in staged)
            skipped = larger_than_input(settings.skip_if_larger, output_bytes, job_plan.source.input_bytes)
            if skipped is not None:
                for final in finals:
                    stage.discard(final)
                output_bytes = None
        if job_plan.compare and skipped is None:
            height, width = job_plan.source.shape[:2]
            titles = (f"Original ({width}x{height})", f"Compressed ({len(palette.colours)} colours)")
            shown = lookup(thumbnail) if settings.dither == "none" else \
                dithered(thumbnail, palette.colours, settings.dither, settings.dither_level)[0]  # the look, at scale
            side_by_side(thumbnail, palette.colours[shown], titles).save(stage(job_plan.compare))
            seconds["compare"] = _lap(started, seconds)
        report = report_phase(settings, job_plan, palette, codes, counts, seconds, output_bytes, stage, tried,
                              skipped, written_error)
    if job_plan.checkpoint is not None:
        job_plan.checkpoint.clear()  # the job is done: nothing to resume
    psnr = "lossless" if report["psnr_db"] is None else f"PSNR {report['psnr_db']:.2f} dB"
    if skipped is not None:
        log.warning("skipped %s: %s", job_plan.out, skipped)
    else:
        written = job_plan.out if not job_plan.frame_outputs else \
            f"{len(job_plan.frame_outputs)} files, {job_plan.frame_outputs[0]} ... {job_plan.frame_outputs[-1]}"
        log.info("wrote %s: %d colours, %s, %.1f s", written, len(palette.colours), psnr,
                 time.perf_counter() - started)
    return report


def _histogram_here(settings, job_plan, frames):
    """:func:`histogram_phase` in this process: the same histogram and thumbnail from the decoded pixels (of every
    frame, merged; the thumbnail of the first)."""
    histogram = merge_histograms([image_histogram(pixels, settings.chunk_size) for pixels in frames])
    codes, counts = histogram["codes"], histogram["counts"]
    log.info("colour histogram: %d distinct colours in %d pixels", len(codes), counts.sum())
    step = thumbnail_step(*frames[0].shape[:2])
    return codes, counts, (frames[0][::step, ::step] if job_plan.compare else None)


def _write_here(settings, pixels, icc_profile, lookup, palette, output):
    """:func:`labels_and_write_phase` in this process."""
    (labels,), error = mapped_frames([pixels], lookup, palette.colours, settings.dither, settings.dither_level)
    write_labels(output, labels, palette.colours, tile=settings.tile_size,
                 attributes=output_attributes(settings), icc_profile=icc_profile,
                 keep_order=isinstance(palette.fit, GivenPalette))
    return error


def _write_frames(settings, job_plan, lookup, palette, output):
    """Map (or dither) every frame of an animation to the palette and write them: one APNG or GIF with the input's
    durations and loop count, or a file per frame (``output``: the list of them); the squared error of the written
    pixels when dithered, else None."""
    frames, colours = job_plan.frames, palette.colours
    labels, error = mapped_frames(frames.pixels, lookup, colours, settings.dither, settings.dither_level)
    keep_order = isinstance(palette.fit, GivenPalette)
    if isinstance(output, list):
        for path, mapped in zip(output, labels):
            write_labels(path, mapped, colours, tile=settings.tile_size, attributes=output_attributes(settings),
                         icc_profile=job_plan.source.icc_profile, keep_order=keep_order)
    else:
        write_animation(output, labels, colours, frames.durations, frames.loop, job_plan.source.icc_profile)
    return error


def histogram_phase(settings, job_plan, image, client):
    """The exact colour histogram: ``(codes (M,) uint32, counts (M,) int64, thumbnail (h, w, C) or None)``; the
    downscaled original for ``--compare`` comes from the same read of the image."""
    source = job_plan.source
    step = thumbnail_step(*image.shape[:2])
    if job_plan.checkpoint is not None and job_plan.checkpoint.start(settings.resume):
        log.info("resuming the colour histogram: %d block histogram(s) saved in %s",
                 len(job_plan.checkpoint.keys()), job_plan.checkpoint.folder)

    def histogram_pass(attempt):
        pixels = image if attempt == 1 else source.to_dask(settings.chunk_size)
        histogram = (colour_histogram(pixels) if job_plan.checkpoint is None else
                     checkpointed_histogram(source, image.chunksize[:2], job_plan.checkpoint))
        wanted = [histogram] + ([pixels[::step, ::step]] if job_plan.compare else [])
        return computed(client, wanted, "colour-histogram", settings.progress_seconds)

    histogram, *thumbnail = with_rebuilds(histogram_pass, "colour histogram", ADVICE)
    codes, counts = histogram["codes"], histogram["counts"]
    log.info("colour histogram: %d distinct colours in %d pixels", len(codes), counts.sum())
    return codes, counts, (thumbnail[0] if thumbnail else None)


def fit_phase(settings, codes, counts, channels, on_cluster=True):
    """``(palette, tried)``: the palette (:func:`mixlib.image.palette.fit_palette`; with ``--target-psnr``, the one
    of fewest colours reaching it, :func:`mixlib.image.palette.fit_to_psnr`) and the ``(k, psnr)`` that search
    fitted, the fit's iterations shown as they go. A histogram of fewer than IN_PROCESS_COLOURS colours is fitted
    in this process (one block of points, which the cluster would only pass through a round trip per iteration; the
    same palette either way), as is any without a cluster (``on_cluster`` False); a larger one on the cluster,
    where the fit scatters the distinct colours itself, so a rerun after a lost worker rebuilds them."""
    in_process = not on_cluster or len(codes) < IN_PROCESS_COLOURS
    progress = IterationProgress("EM" if settings.method == "gmm" else "k-means", settings.max_iter,
                                 settings.progress_seconds)

    fixed = image_colours(fixed_colours(settings), channels, "the image")

    def fit_of(k):
        with progress:
            return fit_palette(codes, counts, channels, k=k, method=settings.method,
                               max_iter=settings.max_iter, tol=settings.tol, batch_size=settings.batch_size,
                               em_init=settings.em_init, em_tol=settings.em_tol, reg_covar=settings.reg_covar,
                               seed=settings.seed, progress=progress, in_process=in_process, fixed_colours=fixed)

    def fit(attempt):
        if not settings.target_psnr:
            return fit_of(settings.k), []
        palette, psnr, tried = fit_to_psnr(fit_of, codes, counts, channels, settings.target_psnr, settings.k,
                                           fixed=0 if fixed is None else len(fixed))
        reached = "reach" if psnr >= settings.target_psnr else "(the most, --k) stay below it at"
        log.info("--target-psnr %g: %d colours %s %.2f dB (fitted k: %s)", settings.target_psnr, len(palette.colours),
                 reached, psnr, ", ".join(str(k) for k, _ in tried))
        return palette, tried

    palette, tried = with_rebuilds(fit, "fitting the palette", ADVICE) if on_cluster else fit(1)
    log.info("%s", palette.fit.describe())
    return palette, tried


def labels_and_write_phase(settings, job_plan, image, lookup, palette, output, client):
    """Map every pixel to its palette entry (``palette-labels`` tasks), or dither it (:func:`dithered_labels`), and
    write the labels to ``output``; the squared error of the written pixels when dithered, else None."""
    source = job_plan.source

    def write(attempt):
        pixels = image if attempt == 1 else source.to_dask(settings.chunk_size)
        if settings.dither != "none":
            labels, error = dithered_labels(pixels, palette.colours, settings.dither, settings.dither_level,
                                            source.row_reader())
            return _write_output(output, labels, palette, settings, client, source.icc_profile, error)
        # The lookup table (16 MiB for RGB) goes to every worker once instead of into the graph.
        lookup_on_workers = client.scatter(lookup, broadcast=True, hash=False)
        labels = pixels.map_blocks(apply_lookup, lookup_on_workers, drop_axis=2, dtype=palette.code_labels.dtype,
                                   token="palette-labels")
        return _write_output(output, labels, palette, settings, client, source.icc_profile)

    return with_rebuilds(write, "writing the output", ADVICE)


def dithered_labels(image, palette, method, level, read_rows=None):
    """The palette indices of ``image`` dithered (:mod:`mixlib.image.dither`) and the squared error of the pixels
    they give, in one graph.

    Floyd-Steinberg is a chain of ``dither-strip`` tasks, one per row of chunks, each taking that row's pixels and the
    error row the row above carried out and giving the row's labels, its carry out and its squared error: the rows are
    dithered in order, one at a time, while the workers' other threads write the labels of the last. An image read from
    a file (``read_rows``) is read a row of chunks at a time by ``dither-read`` tasks, the read of row i after the
    dithering of row i-2 (so it runs beside row i-1's): the chain is slower than a read, and reads free to run ahead
    would bring the whole image into memory. Ordered dithering is blockwise (``dither-ordered`` tasks), its error summed
    over the blocks.

    Parameters
    ----------
    image : dask.array.Array (H, W, C) uint8
    palette : ndarray (k, C') uint8 (C' = C, or 4: an RGBA palette on an RGB image)
    method : 'floyd-steinberg' or 'ordered'
    level : float in 0..1
    read_rows : callable ``(top, bottom) -> (h, W, C)`` uint8 or None (:meth:`~mixlib.image.readers.ImageSource.
        row_reader`): Floyd-Steinberg reads the image's rows itself, in order, instead of taking ``image``'s chunks

    Returns
    -------
    labels : dask.array.Array (H, W) uint8 or uint16
    error : dask.delayed.Delayed, int: the sum over pixels and the image's channels of the squared differences
    """
    import dask
    import dask.array as da

    dtype, width = label_dtype(palette), image.shape[1]
    search = dask.delayed(NearestSearch, pure=True)(palette)  # built once, on a worker, for every task
    if method == "ordered":
        labels = image.map_blocks(_ordered_chunk, palette, ordered_thresholds(palette, level), search, drop_axis=2,
                                  dtype=dtype, token="dither-ordered")
        errors = [dask.delayed(squared_error_of, pure=True)(block, labels_block, palette)
                  for block, labels_block in zip(image.to_delayed().ravel(), labels.to_delayed().ravel())]
        return labels, dask.delayed(sum, pure=True)(errors)
    strips, errors, carried = [], [], [None, None]  # what rows i-2 and i-1 carried out
    link = dask.delayed(dither_row_of_chunks, nout=3, pure=True)
    read = dask.delayed(_rows_after, pure=True)
    top = 0
    for height, row in zip(image.chunks[0], image.to_delayed()[:, :, 0]):
        chunks = list(row) if read_rows is None else [read(read_rows, top, top + height, carried[-2])]
        top += height
        strip, carry, error = link(chunks, palette, level, carried[-1], search)
        carried.append(carry)
        strips.append(da.from_delayed(strip, (height, width), dtype=dtype))
        errors.append(error)
    return da.concatenate(strips, axis=0), dask.delayed(sum, pure=True)(errors)


def _rows_after(read_rows, top, bottom, _after):
    """``read_rows(top, bottom)``; ``_after`` (an earlier link's carry) only orders the read after that link."""
    return read_rows(top, bottom)


def _ordered_chunk(block, palette, thresholds, search, block_info=None):
    """Ordered dithering of one block ``(h, w, C)`` at its place in the image: labels ``(h, w)``."""
    from .dither import dither_block

    (top, _), (left, _), _ = block_info[0]["array-location"]
    return dither_block(block, palette, thresholds, top, left, search)


def report_phase(settings, job_plan, palette, codes, counts, seconds, output_bytes, stage, tried=(), skipped=None,
                 written_error=None):
    """The report (a dict), written to ``--report``, and the mixture to ``--save-model``. ``output_bytes``: of the
    output (or of every frame's), None when the image was not written, and ``skipped`` says why (``--min-psnr``,
    ``--skip-if-larger``); ``tried``: the ``(k, psnr)`` a ``--target-psnr`` search fitted; ``written_error``: the
    squared error of dithered output pixels (else the palette's, from the histogram, is the output's)."""
    source = job_plan.source
    pixels = int(counts.sum())
    palette_mse = squared_error(codes, counts, source.channels, palette) / (pixels * source.channels)
    mse = palette_mse if written_error is None else written_error / (pixels * source.channels)
    report = {
        "input": str(source.path),
        "status": "written" if skipped is None else "skipped",
        "reason": skipped,
        "frames": source.frames,  # of an animation or multi-page file, all compressed with one palette
        "durations_ms": None if job_plan.frames is None else job_plan.frames.durations,
        "loop": None if job_plan.frames is None else job_plan.frames.loop,
        "frame_outputs": None if not job_plan.frame_outputs else [str(p) for p in job_plan.frame_outputs],
        "icc_profile_bytes": len(source.icc_profile or b""),  # the input's colour profile, carried to the output
        "method": settings.method,
        "k_requested": settings.k,
        "k_effective": len(palette.colours),
        "target_psnr_db": settings.target_psnr or None,
        "k_tried": [{"k": k, "psnr_db": psnr if math.isfinite(psnr) else None} for k, psnr in tried],
        "dither": settings.dither,
        "dither_level": settings.dither_level if settings.dither != "none" else None,
        "mse": mse,  # of the output's pixels (dithered or not)
        "psnr_db": psnr_of(mse),  # None: lossless
        "palette_psnr_db": psnr_of(palette_mse),  # every pixel its palette entry, undithered
        "seconds": seconds,
        "input_bytes": source.input_bytes,
        "output_bytes": output_bytes,
        "palette": palette.colours.tolist(),
        "seed": settings.seed,
        "versions": _versions(),
        **{REPORT_NAMES.get(key, key): value for key, value in palette.fit.summary(pixels).items()},
    }
    if job_plan.save_model:
        save_mixture(stage(job_plan.save_model), palette.fit.mixture,
                     {"input": str(source.path), "channels": source.channels, "seed": settings.seed,
                      "mean_loglik_per_pixel": palette.fit.mean_loglik})
    if job_plan.palette_out:
        save_palette(stage(job_plan.palette_out), palette.colours)
    if job_plan.report:
        stage(job_plan.report).write_text(json.dumps(report, indent=2) + "\n")
    return report


def psnr_of(mse):
    """PSNR in dB of a mean squared error on 8-bit samples; None for 0 (lossless)."""
    return 10 * math.log10(255.0 ** 2 / mse) if mse > 0 else None


def _start_preload(dithering=False, colours_and_fits=True):
    """Run :func:`_preload` in a thread. Not a daemon: the first run after an install compiles the loops, and a job
    that ends first waits for it at exit (the interpreter ending inside a compile crashed)."""
    threading.Thread(target=_preload, args=(dithering, colours_and_fits), name="preload").start()


def _preload(dithering=False, colours_and_fits=True):
    """Load numba's loops (numba's start and its cache): the colour and fit loops with ``colours_and_fits``, the
    dithering loops with ``dithering``. A failure here is only logged at debug level: the job meets it again, with
    its own message, where it needs what failed. dask.array is left to the jobs that need it: its import in this
    thread made a small job in this process slower (docs/architecture.md, Cluster)."""
    try:
        if colours_and_fits:
            from ..fit import compiled as fit_loops
            from . import compiled as colour_loops

            colour_loops.warm_up()  # the colour loops first: the histogram needs them first
            fit_loops.warm_up()
        if dithering:
            from . import dither

            dither.warm_up()
    except Exception as e:
        log.debug("preloading failed: %s", e)


def apply_lookup(block, lookup):
    """Palette indices ``(h, w)`` of one image block ``(h, w, C)`` through a :class:`ColourLookup`."""
    return lookup(block)


def _lap(started, seconds):
    return round(time.perf_counter() - started - sum(seconds.values()), 3)


def _write_output(path, labels, palette, settings, client, icc_profile=None, error=None):
    """Write the labels as the output's format says; the input's colour profile goes with them. ``error``: the
    dithered pixels' squared error (Delayed), computed with the labels and returned (else None)."""
    def client_compute(parts, optimize_graph=True):
        return computed(client, parts, "palette-labels", settings.progress_seconds, optimize_graph)

    write = functools.partial(write_labels, path, palette=palette.colours, tile=settings.tile_size,
                              attributes=output_attributes(settings), icc_profile=icc_profile,
                              client_compute=client_compute, keep_order=isinstance(palette.fit, GivenPalette))
    if error is None:
        write(labels)
        return None
    if path.suffix.lower() == ".zarr":  # one graph: the dithered labels are stored as they come
        # Unoptimised: the array's optimisation fused the last dithering task into its labels' and the error
        # (a Delayed) ran it again.
        unoptimised = functools.partial(client_compute, optimize_graph=False)
        return int(write(labels, also=[error], client_compute=unoptimised)[0])
    # A PNG is written whole and a TIFF a few strips at a time: the dithering runs once, its labels kept on the
    # workers until written.
    labels, error = client.persist([labels, error])
    write(labels)
    return int(client_compute([error])[0])


def output_attributes(settings):
    """The attributes of a Zarr output: what made it."""
    return {"method": settings.method, "k": settings.k, "seed": settings.seed, "mixlib": __version__}


def _versions():
    """Versions of Python and of the packages the job ran on (from their metadata: importing zarr and tifffile
    only to read their versions took 0.15 s)."""
    from importlib.metadata import version

    packages = ("numpy", "scipy", "numba", "dask", "distributed", "pillow", "zarr", "tifffile")
    return {"mixlib": __version__, "python": platform.python_version(), **{p: version(p) for p in packages}}
