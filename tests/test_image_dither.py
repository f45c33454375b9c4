"""--dither: Floyd-Steinberg against a plain reference implementation (python loops, brute-force nearest entry),
the same labels for an image dithered whole, in strips, or chunked on the cluster (Zarr and TIFF inputs, any
chunking); ordered dithering against a numpy reference, blockwise; the reports' PSNR against the written pixels."""

import functools
import json
import threading
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import read_png, save_png

from mixlib import quantise
from mixlib.image import dither, dither_loops

FS_SHARES = (7 / 16, 3 / 16, 5 / 16, 1 / 16)


def brute_nearest(value, palette):
    """The index of the entry of ``palette`` nearest to ``value`` (the first of equal distances), in python floats."""
    best, best_index = None, None
    for index, entry in enumerate(palette):
        distance = 0.0
        for v, p in zip(value, entry):
            distance += (v - p) ** 2
        if best is None or distance < best:
            best, best_index = distance, index
    return best_index


def opaque_samples(pixels, channels):
    """Pixels as python floats with ``channels`` samples: transparent RGBA as (0, 0, 0, 0), RGB given alpha 255."""
    samples = pixels.astype(np.float64)
    if pixels.shape[2] == 4:
        samples[pixels[..., 3] == 0] = 0.0
    if channels > pixels.shape[2]:
        samples = np.concatenate([samples, np.full(pixels.shape[:2] + (1,), 255.0)], axis=2)
    return samples


def reference_floyd_steinberg(pixels, palette, level):
    """Floyd-Steinberg in raster order as the textbook writes it: one error array for the whole image."""
    height, width = pixels.shape[:2]
    channels = palette.shape[1]
    samples = opaque_samples(pixels, channels)
    entries = palette.astype(np.float64).tolist()
    error = np.zeros((height + 1, width + 2, channels))
    shares = [level * share for share in FS_SHARES]
    labels = np.zeros((height, width), np.int64)
    for y in range(height):
        for x in range(width):
            value = [min(max(samples[y, x, c] + error[y, x + 1, c], 0.0), 255.0) for c in range(channels)]
            index = labels[y, x] = brute_nearest(value, entries)
            for c in range(channels):
                carried = value[c] - entries[index][c]
                if x + 1 < width:
                    error[y, x + 2, c] += carried * shares[0]
                if x > 0:
                    error[y + 1, x, c] += carried * shares[1]
                error[y + 1, x + 1, c] += carried * shares[2]
                if x + 1 < width:
                    error[y + 1, x + 2, c] += carried * shares[3]
    return labels


def brute_squared_error(pixels, palette, labels):
    """The sum over pixels and the image's channels of the squared differences from their entries (transparent
    pixels as (0, 0, 0, 0)), in integers."""
    channels = pixels.shape[2]
    samples = opaque_samples(pixels, channels).astype(np.int64)
    return int(((samples - palette[labels][..., :channels].astype(np.int64)) ** 2).sum())


def reference_ordered(pixels, palette, level):
    """Ordered dithering in numpy: the Bayer offsets times level and spread on every channel, then the nearest."""
    height, width = pixels.shape[:2]
    entries = palette.astype(np.float64)
    distances = np.sqrt(((entries[:, None] - entries[None]) ** 2).sum(axis=2))
    np.fill_diagonal(distances, np.inf)
    spread = np.median(distances.min(axis=1)) / 2
    bayer = (dither.BAYER_8 + 0.5) / 64 - 0.5
    offsets = np.tile(bayer, (height // 8 + 1, width // 8 + 1))[:height, :width] * level * spread
    values = np.clip(opaque_samples(pixels, palette.shape[1]) + offsets[..., None], 0, 255)
    return ((values[:, :, None, :] - entries[None, None]) ** 2).sum(axis=3).argmin(axis=2)


def random_case(seed, shape, entries, channels):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, shape + (channels,), dtype=np.uint8)
    if channels == 4:
        pixels[rng.random(shape) < 0.1, 3] = 0  # some fully transparent pixels (their colour is noise)
    palette = rng.integers(0, 256, (entries, channels), dtype=np.uint8)
    palette[-1] = palette[1]  # a repeated entry: the first of equal distances wins
    return pixels, palette


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("level", [1.0, 0.55])
@pytest.mark.parametrize("entries", [13, 300])
def test_floyd_steinberg_equals_the_reference(channels, level, entries):
    """Small palettes, whose cells have few candidates (compared without branches), and large ones, whose crowded
    cells loop over their lists."""
    pixels, palette = random_case(channels, (23, 31), entries, channels)
    crowded = dither.NearestSearch(palette).padded[:, 0] == dither_loops.CROWDED
    assert crowded.any() or entries < 300  # both kinds of cells are dithered
    labels, _, squared = dither.dither_strip(pixels, palette, level)
    np.testing.assert_array_equal(labels, reference_floyd_steinberg(pixels, palette, level))
    assert squared == brute_squared_error(pixels, palette, labels)


def test_an_rgba_palette_dithers_an_rgb_image_as_opaque():
    pixels, _ = random_case(5, (17, 19), 6, 3)
    _, palette = random_case(6, (1, 1), 9, 4)
    palette[0, 3] = 255
    labels, _, squared = dither.dither_strip(pixels, palette, 1.0)
    np.testing.assert_array_equal(labels, reference_floyd_steinberg(pixels, palette, 1.0))
    assert squared == brute_squared_error(pixels, palette, labels)  # over the image's three channels


def test_strips_in_order_give_the_image_dithered_whole():
    pixels, palette = random_case(7, (41, 29), 11, 3)
    whole, _, squared = dither.dither_strip(pixels, palette, 0.8)
    carry, strips, strips_squared = None, [], 0
    for top, bottom in ((0, 1), (1, 9), (9, 30), (30, 41)):
        strip, carry, strip_squared = dither.dither_strip(pixels[top:bottom], palette, 0.8, carry)
        strips.append(strip)
        strips_squared += strip_squared
    np.testing.assert_array_equal(np.concatenate(strips), whole)
    assert strips_squared == squared


@pytest.mark.parametrize("entries,channels", [(1, 3), (16, 3), (300, 3), (5000, 3), (40, 4)])
def test_the_cell_search_finds_the_nearest_entry(entries, channels):
    """Level 0 maps every pixel to its nearest entry: brute force over the palette, at cell edges and extremes."""
    rng = np.random.default_rng(entries)
    palette = rng.integers(0, 256, (entries, channels), dtype=np.uint8)
    if entries > 2:
        palette[2] = palette[0]
    pixels = rng.integers(0, 256, (40, 50, channels), dtype=np.uint8)
    pixels[::3, ::2] = (pixels[::3, ::2] // 8) * 8  # cell edges (cells of 8 or 16 levels)
    pixels[0, 0], pixels[0, 1] = 0, 255
    if channels == 4:
        pixels[..., 3] = np.maximum(pixels[..., 3], 1)
    labels = dither.dither_block(pixels, palette, np.zeros((8, 8)))
    distances = ((pixels[:, :, None, :].astype(np.int64) - palette[None, None].astype(np.int64)) ** 2).sum(axis=3)
    np.testing.assert_array_equal(labels, distances.argmin(axis=2))


@pytest.mark.parametrize("channels", [3, 4])
def test_ordered_dithering_equals_the_reference_block_by_block(channels):
    pixels, palette = random_case(11 + channels, (45, 38), 12, channels)
    whole = dither.dither_block(pixels, palette, dither.ordered_thresholds(palette, 0.7))
    np.testing.assert_array_equal(whole, reference_ordered(pixels, palette, 0.7))
    thresholds = dither.ordered_thresholds(palette, 0.7)
    blocks = np.block([[dither.dither_block(pixels[t:t + 13, l:l + 11], palette, thresholds, t, l)
                        for l in range(0, 38, 11)] for t in range(0, 45, 13)])
    np.testing.assert_array_equal(blocks, whole)


def test_quantise_dithers_with_its_own_palette(small_china):
    plain = quantise(small_china, 8, seed=1)
    for method, reference in (("floyd-steinberg", reference_floyd_steinberg), ("ordered", reference_ordered)):
        result = quantise(small_china, 8, seed=1, dither=method, dither_level=0.9)
        np.testing.assert_array_equal(result.palette, plain.palette)
        np.testing.assert_array_equal(result.labels, reference(small_china, plain.palette, 0.9))
        assert result.palette_psnr == plain.psnr
        assert result.psnr == pytest.approx(psnr(small_china, result.pixels), abs=1e-9)
    with pytest.raises(ValueError, match="dither must be one of"):
        quantise(small_china, 8, dither="atkinson")


def psnr(original, written):
    mse = ((original.astype(np.float64) - written.astype(np.float64)) ** 2).mean()
    return 10 * np.log10(255.0 ** 2 / mse)


def read_zarr_output(path):
    import zarr

    group = zarr.open_group(str(path), mode="r")
    return group["labels"][...], group["palette"][...]


def read_tiff_output(path):
    import tifffile

    with tifffile.TiffFile(path) as tiff:
        page = tiff.pages[0]
        labels = page.asarray()
        palette = (page.colormap.T // 257).astype(np.uint8)
    return labels, palette


@pytest.mark.parametrize("method", ["floyd-steinberg", "ordered"])
def test_a_chunked_image_is_dithered_as_the_image_in_memory(run_job, tmp_path, small_china, method):
    """Zarr inputs of 32 x 48 and 80 x 64 chunks, a tiled TIFF and a PNG (decoded, then scattered in chunks of 48),
    dithered on the cluster into a Zarr, a TIFF and a PNG: every output holds the labels of the decoded image
    dithered whole with its palette, and the report gives the PSNR of the written pixels."""
    from test_image_compress_job import write_tiled_tiff, write_zarr_image

    inputs = {"zarr-32": lambda path: write_zarr_image(path.with_suffix(".zarr"), small_china, (32, 48, 3)),
              "zarr-80": lambda path: write_zarr_image(path.with_suffix(".zarr"), small_china, (80, 64, 3)),
              "tiff": lambda path: write_tiled_tiff(path.with_suffix(".tif"), small_china, (32, 32)),
              "png": lambda path: save_png(path.with_suffix(".png"), small_china)}
    expected = None
    for name, suffix in (("zarr-32", ".zarr"), ("zarr-80", ".tif"), ("tiff", ".png"), ("png", ".zarr")):
        source = inputs[name](tmp_path / f"in-{name}")
        out, report = tmp_path / f"out-{name}{suffix}", tmp_path / f"report-{name}.json"
        assert run_job(source, "--k", 8, "--out", out, "--report", report, "--chunk-size", 48, "--dither", method,
                       "--dither-level", 0.9, "--local-pixels", 0) == 0
        reader = {".zarr": read_zarr_output, ".tif": read_tiff_output, ".png": lambda p: read_png(p)[:2]}[suffix]
        labels, palette = reader(out)
        if expected is None:  # the Zarr output's palette, in its order
            reference = reference_floyd_steinberg if method == "floyd-steinberg" else reference_ordered
            expected = palette[reference(small_china, palette, 0.9)]
        np.testing.assert_array_equal(palette[labels], expected)  # a PNG's palette is in its own order
        written = json.loads(report.read_text())
        assert written["dither"] == method and written["dither_level"] == 0.9
        assert written["psnr_db"] == pytest.approx(psnr(small_china, palette[labels]), abs=1e-9)
        assert written["psnr_db"] < written["palette_psnr_db"]


def test_the_job_in_this_process_and_a_batch_dither_as_quantise(run_job, tmp_path, small_china):
    """A small PNG (compressed in this process) and a batch of two (one task each) give quantise's labels."""
    folder = tmp_path / "inputs"
    save_png(folder / "a.png", small_china)
    save_png(folder / "b.png", small_china[::-1, :, :].copy())
    expected = quantise(small_china, 6, dither="floyd-steinberg")
    assert run_job(folder / "a.png", "--k", 6, "--out", tmp_path / "one.png", "--dither", "floyd-steinberg",
                   "--local-pixels", 1 << 22) == 0
    labels, palette, _, pixels = read_png(tmp_path / "one.png")
    np.testing.assert_array_equal(pixels, expected.pixels)
    report = tmp_path / "batch.jsonl"
    assert run_job(folder, "--k", 6, "--out", str(tmp_path / "batch" / "{relpath}.png"), "--report", report,
                   "--dither", "floyd-steinberg") == 0
    records = {json.loads(line)["input"].rsplit("/", 1)[-1]: json.loads(line)
               for line in report.read_text().splitlines()}
    np.testing.assert_array_equal(read_png(tmp_path / "batch" / "a.png")[3], expected.pixels)
    assert records["a.png"]["psnr_db"] == pytest.approx(expected.psnr, abs=1e-4)
    assert records["a.png"]["palette_psnr_db"] == pytest.approx(expected.palette_psnr, abs=1e-4)


@pytest.mark.parametrize("argv,message", [
    (("--dither", "atkinson"), "--dither"),
    (("--dither-level", "1.5"), "--dither-level"),
])
def test_bad_dither_settings_exit_2(run_job, capsys, small_china_png, tmp_path, argv, message):
    assert run_job(small_china_png, "--out", tmp_path / "x.png", *argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("threads", [2, 3])
def test_the_wavefront_on_threads_gives_the_labels_of_one_thread(threads):
    """Slanted pieces on threads (dither._wavefront) against the one-thread loop (itself checked against the
    reference), on strips wide enough to be cut, given a carry in, with a carry out; heights not a multiple of the
    pieces' rows, and a single row."""
    rng = np.random.default_rng(threads)
    palette = rng.integers(0, 256, (13, 3), dtype=np.uint8)
    for height, width in ((300, 1100), (129, 2 * threads * dither.WAVE_WIDTH), (1, 1500)):
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        carry = rng.normal(size=(width, 3)) * 20
        one, carried, squared = dither.dither_strip(pixels, palette, 0.9, carry, threads=1)
        many, carried_many, squared_many = dither.dither_strip(pixels, palette, 0.9, carry, threads=threads)
        np.testing.assert_array_equal(many, one)
        np.testing.assert_array_equal(carried_many, carried)
        assert squared_many == squared == brute_squared_error(pixels, palette, one)


def test_a_failing_wavefront_piece_raises_in_the_caller(monkeypatch):
    """A piece that raises stops the wavefront's threads and its error comes back to the caller: no hang, no labels."""
    real_piece = dither_loops.floyd_steinberg_rgb_piece
    ran = []

    def failing_piece(*arguments):
        top, piece = arguments[-5], arguments[-3]
        ran.append((top, piece))
        if (top, piece) == (dither.GROUP_ROWS, 1):
            raise RuntimeError("piece (1, 1) failed")
        return real_piece(*arguments)

    monkeypatch.setattr(dither_loops, "floyd_steinberg_rgb_piece", failing_piece)
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256, (4 * dither.GROUP_ROWS, 2 * 2 * dither.WAVE_WIDTH, 3), dtype=np.uint8)
    palette = rng.integers(0, 256, (7, 3), dtype=np.uint8)
    outcome = []

    def run():
        try:
            dither.dither_strip(pixels, palette, 1.0, threads=2)
        except RuntimeError as error:
            outcome.append(str(error))

    caller = threading.Thread(target=run, daemon=True)
    caller.start()
    caller.join(timeout=60)
    assert not caller.is_alive(), "the wavefront hung after a failing piece"
    assert outcome == ["piece (1, 1) failed"]
    assert (dither.GROUP_ROWS, 1) in ran and (3 * dither.GROUP_ROWS, 3) not in ran  # stopped before the end


def test_a_wide_zarr_image_is_dithered_on_the_cluster_as_in_memory(run_job, tmp_path, small_china):
    """Rows of chunks 1200 pixels wide: the chain's strips take the wavefront."""
    import zarr
    from test_image_compress_job import write_zarr_image

    pixels = np.concatenate([small_china] * 8, axis=1)[:, :1200]
    source = write_zarr_image(tmp_path / "wide.zarr", pixels, (40, 300, 3))
    assert run_job(source, "--k", 8, "--out", tmp_path / "out.zarr", "--dither", "floyd-steinberg") == 0
    group = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    labels, palette = group["labels"][...], group["palette"][...]
    np.testing.assert_array_equal(labels, dither.dither_strip(pixels, palette, 1.0, threads=1)[0])


@pytest.mark.parametrize("method", ["floyd-steinberg", "ordered"])
def test_a_dithered_zarr_output_dithers_every_strip_once(tmp_path, monkeypatch, method):
    """The labels stored and their squared error come from one graph in which each dithering task runs once (an
    optimised array graph beside the error's Delayed had run the last strip again), and the error is the written
    pixels'."""
    import dask.array as da
    import zarr
    from distributed import Client, LocalCluster, get_worker

    from mixlib.image import compress

    calls = tmp_path / "calls"  # a line per call (the tasks reach the workers pickled, closures copied)

    def counted(function):
        @functools.wraps(function)  # its signature: map_blocks passes block_info to functions that take it
        def run(*args, **kwargs):
            try:
                get_worker()
            except ValueError:  # map_blocks trying it in the client for its output's type
                return function(*args, **kwargs)
            with open(calls, "a") as lines:
                lines.write(function.__name__ + "\n")
            return function(*args, **kwargs)
        return run

    monkeypatch.setattr(compress, "dither_row_of_chunks", counted(compress.dither_row_of_chunks))
    monkeypatch.setattr(compress, "_ordered_chunk", counted(compress._ordered_chunk))
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256, (90, 70, 3), dtype=np.uint8)
    palette = rng.integers(0, 256, (6, 3), dtype=np.uint8)
    image = da.from_array(pixels, chunks=(30, 35, 3))
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        labels, error = compress.dithered_labels(image, palette, method, 1.0)
        settings = SimpleNamespace(tile_size=32, progress_seconds=0, method="kmeans", k=6, seed=0)
        written = compress._write_output(tmp_path / "out.zarr", labels, SimpleNamespace(colours=palette, fit=None),
                                         settings, client, error=error)
    assert len(calls.read_text().split()) == (3 if method == "floyd-steinberg" else 6)
    stored = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")["labels"][...]
    assert written == int(((pixels.astype(np.int64) - palette[stored]) ** 2).sum())
