"""Batch compression: many images in one job, each image one unit of work on a worker.

The inputs (:func:`expand_inputs`) are files, folders (walked recursively for files with an image suffix), glob
patterns, ``@LIST.txt`` files (one path or URL a line), and fsspec URLs of each. Every image is compressed inside
one task (:func:`compress_image`): decoded, histogrammed, fitted, mapped to its palette, encoded and written (staged,
then renamed), with the same kernels as the chunked path of a single image, run in the task's process
(:class:`~mixlib.fit.points.LocalPoints` gives the fits' exact bits), so an image has the same output bytes alone or
in a batch. Tasks carry a few small images each and are submitted in a bounded window (:func:`run_batch`), so
neither the scheduler nor the client ever holds the whole batch; the client keeps the report. An image larger than
``task_pixels`` is left to the chunked path of a single-image job, after the window. One bad input is a record with
its reason and the others are written.
"""

import dataclasses
import functools
import glob as globbing
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np

from ..core.errors import InputError
from ..core.outputs import staged_outputs
from ..core.storage import is_local, location, tree_bytes
from .colors import image_histogram, merge_histograms
from .palette import colours_for
from .quantise import quantise_frames
from .readers import SAMPLE_PREFIX, Frames, inspect_image, read_frames, resolve_input
from .writers import (FRAME_FIELD, check_animation_output, check_gif_alpha, frame_paths, write_animation,
                      write_labels)

log = logging.getLogger("mixlib")

GLOB_CHARACTERS = "*?["
GROUP_BYTES = 8 << 20  # input bytes that one task takes at most (a larger file has a task of its own)
GROUP_FILES = 16  # files that one task takes at most
ZARR_MARKERS = ("zarr.json", ".zarray")


@dataclasses.dataclass(frozen=True)
class BatchInput:
    """One input of a batch.

    Attributes
    ----------
    name : str, a local path (absolute) or an fsspec URL, as the readers take it
    relpath : str, the path relative to the folder or glob root it came from, without its suffix
    """

    name: str
    relpath: str


@dataclasses.dataclass(frozen=True)
class ImageOptions:
    """What every image of a batch is compressed with (the fit's parameters, the chunking, the limits)."""

    k: int
    method: str
    max_iter: int
    tol: float
    batch_size: int
    em_init: str
    em_tol: float
    reg_covar: float
    seed: int
    chunk_size: int
    tile_size: int
    max_pixels: int
    task_pixels: int
    attributes: dict  # of a Zarr output
    target_psnr: float = 0.0  # dB: the fewest colours up to k reaching it (0: k colours)
    min_psnr: float = 0.0  # dB: an image whose palette stays below it is skipped (0: none is)
    skip_if_larger: bool = False  # an output larger than its input file is skipped
    fixed_colours: object = None  # ndarray (n, 4) uint8 of --fixed-colours (mixlib.image.palette.parse_colours)
    palette: object = None  # ndarray (p, 3|4) uint8 of --palette, applied to every image instead of a fit
    palette_source: str = ""  # the --palette file, for the messages
    dither: str = "none"  # none, floyd-steinberg or ordered (mixlib.image.dither)
    dither_level: float = 1.0
    overwrite: bool = False  # the files of an animation's frames (--out with {frame}) may be replaced


# ------------------------------------------------------------------------------------------- inputs

def is_batch(names):
    """True when the inputs name a batch: several inputs, or one folder (not a Zarr store), glob or list."""
    if len(names) != 1:
        return True
    name = names[0]
    if name.startswith("@") or any(c in name for c in GLOB_CHARACTERS):
        return True
    if name.startswith(SAMPLE_PREFIX):
        return False
    path = location(name, "input")
    return path.is_dir() and not _is_zarr_store(path)


def expand_inputs(names):
    """Every image the inputs name, in the order given (a folder's and a glob's files sorted).

    Returns
    -------
    inputs : list of BatchInput
    others : int, files without an image suffix found in folders and globs (left alone)
    """
    inputs, others = [], 0
    for name in names:
        if name.startswith("@"):
            inputs += [BatchInput(_name(line), _stem(line)) for line in _list_file(name[1:])]
        elif any(c in name for c in GLOB_CHARACTERS):
            found, skipped = _globbed(name)
            inputs, others = inputs + found, others + skipped
        elif name.startswith(SAMPLE_PREFIX):
            inputs.append(BatchInput(str(resolve_input(name)), _stem(name[len(SAMPLE_PREFIX):])))
        else:
            path = location(name, "input")
            if not path.exists():
                raise InputError(f"input {name} does not exist")
            if path.is_dir() and not _is_zarr_store(path):
                found, skipped = _walked(path)
                inputs, others = inputs + found, others + skipped
            else:
                inputs.append(BatchInput(str(path), path.stem))
    return inputs, others


def _list_file(name):
    """The non-empty lines of a list file, stripped."""
    try:
        lines = location(name, "@LIST").read_text().splitlines()
    except (FileNotFoundError, IsADirectoryError, UnicodeDecodeError) as e:
        raise InputError(f"input list @{name} cannot be read ({e.__class__.__name__}): give a text file of one "
                         "path or URL a line") from None
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _name(text):
    return str(location(text, "input"))


def _stem(text):
    return Path(text.rstrip("/")).stem


def _walked(folder):
    """The images under ``folder`` (Zarr stores as images, not walked into) and the count of other files."""
    paths = list(_tree(folder))
    found = [BatchInput(str(p), _relative(p, folder)) for p in paths if _is_image(p)]
    return sorted(found, key=lambda item: item.relpath), sum(1 for p in paths if not _is_image(p))


def _tree(folder):
    """Files and Zarr stores below ``folder``, depth first, not inside Zarr stores."""
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_dir() and not _is_zarr_store(path):
            yield from _tree(path)
        else:
            yield path


def _globbed(pattern):
    """The images a glob pattern matches (``**`` recursive), relative to the folder before its first wildcard."""
    root_text = pattern[:min(pattern.index(c) for c in GLOB_CHARACTERS if c in pattern)].rpartition("/")[0] or "."
    root = location(root_text, "input")
    if is_local(root):
        matches = [Path(p) for p in sorted(globbing.glob(str(location(pattern, "input")), recursive=True))]
    else:
        matches = [root.joinpath(p[len(root.path):].lstrip("/")) for p in sorted(root.fs.glob(pattern))]
    found = [BatchInput(str(p), _relative(p, root)) for p in matches if _is_image(p)]
    return found, sum(1 for p in matches if not p.is_dir() and not _is_image(p))


def _relative(path, root):
    """``path`` relative to ``root``, without its suffix (``holiday/beach`` for ``root/holiday/beach.jpg``)."""
    relative = str(path)[len(str(root).rstrip("/")) + 1:]
    return str(Path(relative).with_suffix("")) if Path(relative).suffix else relative


def _is_image(path):
    """A Zarr store, or a file with an image suffix."""
    return _is_zarr_store(path) or (path.suffix.lower() in image_suffixes() and not path.is_dir())


def _is_zarr_store(path):
    return path.suffix.lower() == ".zarr" or (path.is_dir() and any((path / m).exists() for m in ZARR_MARKERS))


@functools.cache
def image_suffixes():
    """The suffixes of the files a batch takes as images: every format Pillow opens, TIFF and Zarr."""
    from PIL import Image

    Image.init()
    return set(Image.registered_extensions()) | {".tif", ".tiff", ".zarr"}


# ------------------------------------------------------------------------------------------ one image

def compress_group(jobs, options):
    """The records of a few images compressed one after another in this task (``compress-image`` tasks)."""
    return [compress_image(name, out, options) for name, out in jobs]


def compress_image(name, out, options):
    """Compress one image in this process and write it to ``out`` (staged, then renamed); return its record.

    A bad input (unreadable, truncated, unsupported, too large to decode) is a record with ``status`` 'failed'
    and the reason; an image of more than ``options.task_pixels`` is 'deferred' to the chunked path.

    Returns
    -------
    dict, the report's record: input, output, status, reason, width, height, mode, frames, distinct_colours, k,
        iterations, psnr_db, bytes_in, bytes_out, seconds
    """
    started = time.perf_counter()
    record = {"input": name, "output": str(out), "status": "failed", "reason": None}
    try:
        source = inspect_image(name, options.max_pixels)
        height, width, channels = source.shape
        record.update(width=width, height=height, mode=source.mode, frames=source.frames)
        if source.frames == 1 and height * width > options.task_pixels:  # frames are decoded in memory anyway
            record.update(status="deferred", reason=f"{height * width} pixels: the chunked path")
            return record
        record.update(_compressed(source, location(out, "--out"), options))
    except InputError as e:
        record["reason"] = str(e)
    except Exception as e:  # noqa: BLE001  (one input's unexpected failure must not end the batch)
        record["reason"] = f"unexpected failure: {e.__class__.__name__}: {' '.join(str(e).split())}"
    record["seconds"] = round(time.perf_counter() - started, 3)
    return record


def _compressed(source, out, options):
    """Histogram, palette, labels (:func:`mixlib.image.quantise.quantise_frames`) and output of one decoded image,
    or of every frame of an animation with one palette; the record's fields of a written image, or of one skipped
    by ``min_psnr`` or ``skip_if_larger``."""
    fixed = None if options.fixed_colours is None else image_colours(options.fixed_colours, source.channels,
                                                                     source.path)
    frames = read_frames(source.path, options.max_pixels) if source.frames > 1 else \
        Frames([source.read_pixels()], None, None)
    outputs = _frame_outputs(source, out, frames, options.overwrite)
    check_gif_alpha(out, frames.pixels)
    result = quantise_frames(frames.pixels, options.k, chunk_size=options.chunk_size, method=options.method,
                             max_iter=options.max_iter, tol=options.tol, batch_size=options.batch_size,
                             em_init=options.em_init, em_tol=options.em_tol, reg_covar=options.reg_covar,
                             seed=options.seed, target_psnr=options.target_psnr or None, fixed_colours=fixed,
                             palette=options.palette, palette_source=options.palette_source,
                             dither=options.dither, dither_level=options.dither_level,
                             threads=1)  # the batch's tasks fill the workers' threads
    pixel_count = sum(pixels.shape[0] * pixels.shape[1] for pixels in frames.pixels)
    record = {"status": "written", "distinct_colours": result.distinct_colours, "k": len(result.palette),
              "iterations": result.fit.summary(pixel_count)["iterations"],
              "psnr_db": _rounded(result.psnr), "palette_psnr_db": _rounded(result.palette_psnr),
              "bytes_in": source.input_bytes, "bytes_out": None}
    skipped = below_min_psnr(options.min_psnr, result.palette_psnr)
    with staged_outputs() as stage:
        if skipped is None:
            staged = [stage(path) for path in outputs]
            if len(staged) < len(frames.pixels):  # one animation
                write_animation(staged[0], result.labels, result.palette, frames.durations, frames.loop,
                                source.icc_profile)
            else:
                for path, labels in zip(staged, result.labels):
                    write_labels(path, labels, result.palette, tile=options.tile_size, attributes=options.attributes,
                                 icc_profile=source.icc_profile, keep_order=options.palette is not None)
            record["bytes_out"] = sum(tree_bytes(path) for path in staged)
            skipped = larger_than_input(options.skip_if_larger, record["bytes_out"], source.input_bytes)
            if skipped is not None:
                for path in outputs:
                    stage.discard(path)
    if skipped is not None:
        record.update(status="skipped", reason=skipped)
    return record


def _frame_outputs(source, out, frames, overwrite):
    """The files an image's frames go to: ``out`` (one image, or an APNG or GIF of every frame), or one per frame
    for an ``out`` with FRAME_FIELD; InputError for an output that cannot hold the frames, or a frame's file that
    exists without ``overwrite``."""
    check_animation_output(out, frames, source.path)
    if FRAME_FIELD not in str(out):
        return [out]
    outputs = frame_paths(out, len(frames.pixels))
    existing = [path for path in outputs if path.exists()]
    if existing and not overwrite:
        raise InputError(f"output {existing[0]} exists; pass --overwrite to replace it")
    return outputs


def _rounded(psnr):
    """A PSNR for the report: None when lossless."""
    return round(psnr, 4) if math.isfinite(psnr) else None


def below_min_psnr(min_psnr, psnr):
    """Why an image whose palette reaches ``psnr`` dB is skipped under ``--min-psnr`` (0: never), or None."""
    if min_psnr and psnr < min_psnr:
        return f"PSNR {psnr:.2f} dB below --min-psnr {min_psnr:g}"
    return None


def larger_than_input(skip_if_larger, output_bytes, input_bytes):
    """Why an output of ``output_bytes`` is skipped under ``--skip-if-larger``, or None."""
    if skip_if_larger and input_bytes is not None and output_bytes > input_bytes:
        return f"{output_bytes} bytes, larger than the input's {input_bytes} (--skip-if-larger)"
    return None


def image_colours(colours, channels, name):
    """Fixed colours ``(n, 4)`` for an image of ``channels`` (:func:`mixlib.image.palette.colours_for`), None when
    there are none; InputError naming the image."""
    if not len(colours):
        return None
    try:
        return colours_for(colours, channels)
    except ValueError as e:
        raise InputError(f"--fixed-colours for input {name}: {e}") from None


# ---------------------------------------------------------------------------------------- the batch

def task_groups(jobs, spread=1):
    """The jobs ``(input name, output)`` in tasks, the largest files first (the longest tasks start first, so that a
    batch does not end with one worker busy on a large image while the others wait): consecutive small files
    together, up to GROUP_BYTES of input and GROUP_FILES files a task (files whose size is unknown here, at URLs,
    four to a task, last), and at most ``len(jobs) / spread`` files, so that a small batch still gives every worker
    thread work."""
    most_files = max(1, min(GROUP_FILES, len(jobs) // max(spread, 1)))
    sized = sorted(((job, _size(job[0])) for job in jobs), key=lambda pair: 1 if pair[1] is None else -pair[1])
    group, group_bytes = [], 0
    for job, size in sized:
        if group and (len(group) >= (most_files if size is not None else min(4, most_files))
                      or group_bytes + (size or 0) > GROUP_BYTES):
            yield group
            group, group_bytes = [], 0
        group.append(job)
        group_bytes += size or 0
    if group:
        yield group


def _size(name):
    try:
        return os.path.getsize(name) if "://" not in name else None
    except OSError:
        return None


class JsonLines:
    """A report written a record a line as the batch goes (each line flushed and synced: a job killed at any moment
    leaves every finished record)."""

    def __init__(self, path):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "w") if path is not None else None

    def write(self, record):
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
            os.fsync(self.file.fileno())

    def close(self):
        if self.file is not None:
            self.file.close()


def run_batch(client, jobs, options, *, report, progress, window, fail_fast=False, on_deferred=None):
    """Compress ``jobs`` ``[(input name, output path)]`` on ``client``, in a bounded window of tasks.

    Parameters
    ----------
    client : distributed.Client
    jobs : list of (str, str)
    options : ImageOptions
    report : JsonLines, receives every record as it comes
    progress : callable ``(done, stage=, total=, **values)``
    window : int, tasks in flight at most
    fail_fast : bool, stop at the first failed input (the tasks in flight are cancelled)
    on_deferred : callable ``(record) -> record`` or None, compresses an image too large for one task

    Returns
    -------
    dict of counts by status, the megapixels and bytes in and out
    """
    from distributed import as_completed

    totals = {"written": 0, "skipped": 0, "failed": 0, "megapixels": 0.0, "bytes_in": 0, "bytes_out": 0}
    groups = enumerate(task_groups(jobs, spread=2 * window))
    started, done, deferred, jobs_of = time.perf_counter(), 0, [], {}

    def submit():
        number, group = next(groups, (None, None))
        if group is not None:
            future = client.submit(compress_group, group, options, key=f"compress-image-{number}-{started}",
                                   pure=False)
            jobs_of[future.key] = group
            in_flight.add(future)

    in_flight = as_completed(loop=client.loop)
    for _ in range(window):
        submit()
    for future in in_flight:
        for record in _records(future, jobs_of.pop(future.key)):
            if record["status"] == "deferred":
                deferred.append(record)
                continue
            done += 1
            _count(totals, record, report)
            progress(done, stage="images", total=len(jobs),
                     megapixels_per_second=totals["megapixels"] / max(time.perf_counter() - started, 1e-9))
        if fail_fast and totals["failed"]:  # the task's other records are in; the tasks in flight are not
            client.cancel(list(in_flight.futures))
            return totals
        submit()
    for record in deferred:
        _count(totals, on_deferred(record) if on_deferred else {**record, "status": "failed"}, report)
    return totals


def histogram_group(jobs, options):
    """The merged colour histograms of a few images, in this task (``colour-histogram`` tasks of
    ``--shared-palette``): ``{3: RGB histogram, 4: RGBA histogram}`` (None where the group has no such image), and
    ``"too_large"``, the images above ``options.task_pixels``, which are left out, as are images that cannot be
    read (the compress pass records them). Every frame of an animation counts."""
    parts, too_large = {3: [], 4: []}, 0
    for name, _ in jobs:
        try:
            source = inspect_image(name, options.max_pixels)
            height, width, channels = source.shape
            if source.frames > 1:
                frames = read_frames(source.path, options.max_pixels).pixels
                parts[frames[0].shape[2]].extend(image_histogram(pixels, options.chunk_size) for pixels in frames)
            elif height * width <= options.task_pixels:
                parts[channels].append(image_histogram(source.read_pixels(), options.chunk_size))
            else:
                too_large += 1
        except InputError:
            continue
    return {**{channels: merge_histograms(found) if found else None for channels, found in parts.items()},
            "too_large": too_large}


def shared_histogram(client, jobs, options, *, window, progress):
    """The exact colour histogram of every image of a batch together: ``(codes (M,) uint32, counts (M,) int64,
    channels)``, RGBA when any image is (an RGB colour is then opaque). :func:`histogram_group` tasks run in a
    bounded window and their histograms are merged here as they come (the merge of counts is exact, so the order
    of completion does not change it); None when no image could be read."""
    from distributed import as_completed

    merged, too_large = {3: [], 4: []}, 0
    groups = enumerate(task_groups(jobs, spread=2 * window))
    started, done = time.perf_counter(), 0

    def submit():
        number, group = next(groups, (None, None))
        if group is not None:
            in_flight.add(client.submit(histogram_group, group, options, key=f"colour-histogram-{number}-{started}",
                                        pure=False))

    in_flight = as_completed(loop=client.loop)
    for _ in range(window):
        submit()
    for future in in_flight:
        try:
            found = future.result()
        except Exception:  # noqa: BLE001  (a task killed with its worker: the compress pass records its images)
            found = {}
        too_large += found.pop("too_large", 0)
        for channels, histogram in found.items():
            if histogram is not None:
                merged[channels] = [merge_histograms(merged[channels] + [histogram])]
        done += 1
        progress(done, stage="histogram groups")
        submit()
    if too_large:
        log.warning("shared palette: %d image(s) above --task-pixels are not in its histogram (they take the "
                    "palette all the same)", too_large)
    rgb, rgba = (merged[c][0] if merged[c] else None for c in (3, 4))
    if rgba is None and rgb is None:
        return None
    if rgba is None:
        return rgb["codes"], rgb["counts"], 3
    if rgb is not None:  # opaque RGBA codes of the RGB colours: (r, g, b, 255), in the same order
        rgba = merge_histograms([rgba, {"codes": (rgb["codes"] << np.uint32(8)) | np.uint32(0xFF),
                                        "counts": rgb["counts"]}])
    return rgba["codes"], rgba["counts"], 4


def _records(future, jobs):
    """The records of a finished task; a task that failed as a whole (its worker killed it, repeatedly) fails each
    of its images, ``jobs``, with the reason."""
    try:
        return future.result()
    except Exception as e:  # noqa: BLE001  (KilledWorker, most often: the batch goes on)
        reason = f"its task failed: {e.__class__.__name__}: {' '.join(str(e).split())}"
        return [{"input": name, "output": str(out), "status": "failed", "reason": reason} for name, out in jobs]


def _count(totals, record, report):
    totals[record["status"]] += 1
    if record["status"] == "written":
        totals["megapixels"] += record["width"] * record["height"] / 1e6
        totals["bytes_in"] += record["bytes_in"]
        totals["bytes_out"] += record["bytes_out"]
    report.write(record)
