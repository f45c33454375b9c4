"""Sampling: draw a new image pixel by pixel from a fitted Gaussian mixture (the seed notebook's gmm_sample).

Every pixel is an independent draw, clipped to 0..255 and rounded. The draws come from a fixed grid of
``STREAM_TILE x STREAM_TILE`` tiles, each with its own random stream (``SeedSequence(seed)`` spawned at the
tile's row and column), and Dask chunks are whole tiles, so the image does not depend on the chunking or on
where a chunk runs.
"""

import dataclasses
import logging
import re
import time
from pathlib import Path

import numpy as np

from ..core.cli import JobOptions
from ..core.cluster import with_rebuilds
from ..core.config import option
from ..core.errors import InputError
from ..core.outputs import check_output, staged_outputs
from ..core.progress import computed
from ..core.storage import location
from ..fit.gmm import Mixture, load_mixture, sample_mixture
from .readers import PILLOW_MAX_PIXELS, inspect_image
from .writers import OUTPUT_SUFFIXES, check_png_size, side_by_side, thumbnail_step, write_pixels

log = logging.getLogger("mixlib")

STREAM_TILE = 256


@dataclasses.dataclass(frozen=True)
class SampleSettings(JobOptions):
    """Settings of ``python -m jobs.sample`` (keys of configs/sample.toml)."""

    model: str = option("", "mixture file (.json) written by jobs.compress --method gmm --save-model",
                        group="input and output")
    like: str = option("", "draw an image of this image's size (and compare against it)", group="input and output")
    shape: str = option("", "HxW: draw an image of this many rows and columns (instead of --like)",
                        group="input and output")
    out: str = option("outputs/sample/sample-seed{seed}.png", "output .png, .tif (tiled) or .zarr (an "
                                                               "(H, W, C) array); {seed} is filled in",
                                                               group="input and output")
    compare: str = option("", "with --like: write that image and the sampled one side by side here",
                          group="input and output")
    seed: int = option(0, "random seed", minimum=0, group="model")
    chunk_size: int = option(2048, f"Dask chunk side in pixels (rounded to a multiple of {STREAM_TILE})",
                             minimum=1)
    tile_size: int = option(1024, "tile side of TIFF output and chunk side of Zarr output (multiple of 16)",
                            minimum=16)
    local_pixels: int = option(1 << 22, "an image of up to this many pixels is drawn in this process (its threads), "
                                        "without a cluster or dashboard (0: always start one)", minimum=0)
    max_pixels: int = option(PILLOW_MAX_PIXELS, "largest --like image Pillow may decode", minimum=1,
                             group="input and output")


@dataclasses.dataclass
class Plan:
    """What a checked sampling job will draw and write."""

    mixture: Mixture
    shape: tuple
    like: object
    out: Path
    compare: Path | None


def parse_shape(text):
    """``'HxW'`` -> (H, W), both positive."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match or int(match[1]) == 0 or int(match[2]) == 0:
        raise InputError(f"--shape {text!r} is not HxW with two positive whole numbers (e.g. 480x640)")
    return int(match[1]), int(match[2])


def plan(settings):
    """Check the model, the size, and the outputs before any heavy work."""
    if not settings.model:
        raise InputError("--model is required: a mixture file written by jobs.compress --method gmm --save-model")
    if bool(settings.like) == bool(settings.shape):
        raise InputError("give exactly one of --like IMAGE and --shape HxW")
    if settings.tile_size % 16:
        raise InputError(f"--tile-size is {settings.tile_size}; TIFF tiles need a multiple of 16")
    if settings.compare and not settings.like:
        raise InputError("--compare needs --like: it shows that image beside the sampled one")
    out = location(settings.out.replace("{seed}", str(settings.seed)), "--out")
    compare = location(settings.compare, "--compare") if settings.compare else None
    check_output(out, settings.overwrite, OUTPUT_SUFFIXES)
    if compare is not None:
        check_output(compare, settings.overwrite, (".png",))
        if compare == out:
            raise InputError("--out and --compare must be different files")
    mixture = load_mixture(settings.model)
    like = inspect_image(settings.like, settings.max_pixels) if settings.like else None
    shape = like.shape[:2] if like else parse_shape(settings.shape)
    check_png_size(out, *shape)
    return Plan(mixture, shape, like, out, compare)


def worker_paths(job_plan):
    """What the workers touch themselves: ``(reads, writes)``, a Zarr or TIFF ``--like`` image they read for the
    comparison, and the folder of a Zarr output they write into."""
    like = job_plan.like
    reads = [like.path] if like is not None and like.kind != "pillow" else []
    writes = [job_plan.out.parent] if job_plan.out.suffix.lower() == ".zarr" else []
    return reads, writes


def sample_block(mixture, seed, block_info=None):
    """Draw the pixels of one chunk, tile by tile from each tile's own stream.

    Returns
    -------
    ndarray (h, w, D) uint8
    """
    (r0, r1), (c0, c1), _ = block_info[None]["array-location"]
    out = np.empty((r1 - r0, c1 - c0, mixture.means.shape[1]), dtype=np.uint8)
    for top in range(r0, r1, STREAM_TILE):
        for left in range(c0, c1, STREAM_TILE):
            rows, cols = min(STREAM_TILE, r1 - top), min(STREAM_TILE, c1 - left)
            stream = np.random.SeedSequence(seed, spawn_key=(top // STREAM_TILE, left // STREAM_TILE))
            draws = sample_mixture(mixture, rows * cols, np.random.default_rng(stream))
            out[top - r0:top - r0 + rows, left - c0:left - c0 + cols] = np.clip(np.rint(draws), 0, 255).reshape(
                rows, cols, -1)
    return out


def sampled_image(mixture, shape, seed, chunk_size):
    """Lazy ``(H, W, D)`` uint8 image of independent draws from ``mixture`` (``mixture-sample`` tasks)."""
    import dask.array as da

    side = max(1, round(chunk_size / STREAM_TILE)) * STREAM_TILE
    chunks = tuple(_chunks(n, side) for n in shape) + ((mixture.means.shape[1],),)
    return da.map_blocks(sample_block, mixture, seed, chunks=chunks, dtype=np.uint8, token="mixture-sample")


def _chunks(n, side):
    full, rest = divmod(n, side)
    return (side,) * full + ((rest,) if rest else ())


def runs_here(settings, job_plan):
    """Whether the job is small enough to run in this process without a cluster (:func:`mixlib.core.cli.job_main`
    asks): an image of at most ``--local-pixels`` pixels, and a ``--like`` image decoded in memory, if any. The
    same tiles are drawn from the same streams, so the output is the same."""
    height, width = job_plan.shape
    return height * width <= settings.local_pixels and (job_plan.like is None or job_plan.like.kind == "pillow")


def run(settings, job_plan, client):
    """Draw the image, write it (and the comparison), renamed into place at the end; on ``client``, or with Dask's
    threads in this process when it is None (:func:`runs_here`)."""
    started = time.perf_counter()
    height, width = job_plan.shape
    image = sampled_image(job_plan.mixture, job_plan.shape, settings.seed, settings.chunk_size)
    log.info("drawing %dx%d pixels from a %d-component mixture, %s chunks", height, width,
             len(job_plan.mixture.weights), "x".join(map(str, image.chunksize[:2])))
    if client is None:
        import dask
        import dask.threaded

        def compute(parts):  # the scheduler itself, not its name: a name makes Dask import distributed
            return list(dask.compute(*parts, scheduler=dask.threaded.get))
    else:
        def compute(parts):
            return computed(client, parts, "mixture-sample", settings.progress_seconds)
    with staged_outputs() as stage:
        write_pixels(stage(job_plan.out), image, settings.tile_size, compute)
        if job_plan.compare and client is None:
            _write_comparison(stage(job_plan.compare), job_plan, image, settings, compute)
        elif job_plan.compare:  # a decoded 'like' image is scattered: rebuilt if a worker dies with it
            with_rebuilds(lambda attempt: _write_comparison(stage(job_plan.compare), job_plan, image, settings,
                                                            compute),
                          "the comparison image", "give the workers more memory")
    log.info("wrote %s in %.1f s", job_plan.out, time.perf_counter() - started)


def _write_comparison(path, job_plan, image, settings, compute):
    step = thumbnail_step(*job_plan.shape)
    if job_plan.like.kind == "pillow":  # decoded already: no need to send it through the cluster
        small_original = job_plan.like.pixels[::step, ::step]
        (small_sample,) = compute([image[::step, ::step]])
    else:
        original = job_plan.like.to_dask(settings.chunk_size)
        small_original, small_sample = compute([original[::step, ::step], image[::step, ::step]])
    if small_original.shape[2] != small_sample.shape[2]:  # an RGB photo beside an RGBA model, or the reverse
        small_original = _with_channels(small_original, small_sample.shape[2])
    titles = (f"Original ({job_plan.shape[1]}x{job_plan.shape[0]})",
              f"Sampled ({len(job_plan.mixture.weights)} components)")
    side_by_side(small_original, small_sample, titles).save(path)


def _with_channels(pixels, channels):
    if channels == 4:
        return np.dstack([pixels, np.full(pixels.shape[:2], 255, np.uint8)])
    return pixels[..., :3]
