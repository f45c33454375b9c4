"""Benchmark of `python -m jobs.compress` against scikit-learn, MiniBatchKMeans and Pillow, in one run.

    python benchmarks/compress.py [--workdir DIR] [--k 16] [--repeats 3] [--skip-gigapixel]

For each image (scikit-learn's sample photos, and 16- and 64-megapixel images built from them) it times:
  * this job, the whole command (`python -m jobs.compress`, start-up and decoding included), with an
    embedded cluster of worker processes and of threads;
  * scikit-learn's KMeans (n_init=1) fit + predict on the same pixels (float64);
  * scikit-learn's MiniBatchKMeans fit + predict;
  * Pillow's Image.quantize (median cut).
and prints wall-time medians, PSNR and the ratio of each peer's time to this job's. Then it builds a
>= 1-gigapixel Zarr image and prints the job's wall time, throughput and peak memory (the job's whole
process tree) beside a plain Dask read (`sum`) of the same array.
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
MINIBATCH_MAX_PIXELS = 4_000_000
Image.MAX_IMAGE_PIXELS = None


def psnr(original, compressed):
    mse = np.mean((original.astype(np.float64) - compressed.astype(np.float64)) ** 2)
    return 10 * math.log10(255.0 ** 2 / mse)


def photo(name):
    from sklearn.datasets import load_sample_image

    return load_sample_image(name)


def built_image(side):
    """A side x side RGB image: china and flower, each resized (bicubic) to one half."""
    halves = [Image.fromarray(photo(n)).resize((side // 2, side), Image.BICUBIC) for n in ("china.jpg", "flower.jpg")]
    canvas = Image.new("RGB", (side, side))
    canvas.paste(halves[0], (0, 0))
    canvas.paste(halves[1], (side // 2, 0))
    return np.asarray(canvas)


class PeakMemory:
    """Samples the summed RSS of a process and its children every 50 ms."""

    def __init__(self, pid):
        self.process, self.peak, self._stop = psutil.Process(pid), 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self):
        while not self._stop.is_set():
            try:
                tree = [self.process] + self.process.children(recursive=True)
                self.peak = max(self.peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            self._stop.wait(0.05)

    def stop(self):
        self._stop.set()
        self._thread.join()
        return self.peak


def run_job(args):
    """Run the job as a command; return (wall seconds, peak bytes of its process tree, report dict)."""
    report = Path(tempfile.mkdtemp()) / "report.json"
    command = [sys.executable, "-m", "jobs.compress", *map(str, args), "--report", str(report),
               "--overwrite", "--log-level", "warning", "--dashboard-address", "127.0.0.1:0"]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    memory = PeakMemory(process.pid)
    _, stderr = process.communicate()
    seconds = time.perf_counter() - started
    peak = memory.stop()
    if process.returncode != 0:
        raise RuntimeError(f"job failed ({process.returncode}): {stderr}")
    return seconds, peak, json.loads(report.read_text())


def time_peer(function, repeats):
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def sklearn_kmeans(pixels, k, seed):
    from sklearn.cluster import KMeans

    x = pixels.reshape(-1, 3).astype(np.float64)
    model = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(x)
    return np.clip(np.rint(model.cluster_centers_), 0, 255).astype(np.uint8)[model.predict(x)].reshape(pixels.shape)


def sklearn_minibatch(pixels, k, seed):
    from sklearn.cluster import MiniBatchKMeans

    x = pixels.reshape(-1, 3).astype(np.float64)
    # One pass over the data at most: with its defaults (100 passes) it ran for over ten minutes at 16 MP here.
    model = MiniBatchKMeans(n_clusters=k, n_init=1, batch_size=4096, max_iter=1, random_state=seed).fit(x)
    return np.clip(np.rint(model.cluster_centers_), 0, 255).astype(np.uint8)[model.predict(x)].reshape(pixels.shape)


def pillow_quantize(pixels, k):
    return np.asarray(Image.fromarray(pixels).quantize(colors=k).convert("RGB"))


def compare_on(name, pixels, path, k, repeats, workdir, peers_repeats):
    rows = []
    out = workdir / f"{name}-out.png"
    for label, flags in (("mixlib (processes)", ["--processes"]), ("mixlib (threads)", ["--no-processes"])):
        runs = [run_job([path, "--k", k, "--out", out, "--max-pixels", pixels.size, *flags]) for _ in range(repeats)]
        seconds = statistics.median(r[0] for r in runs)
        rows.append((label, seconds, runs[-1][2]["psnr_db"], f"iterations {runs[-1][2]['iterations']}, "
                                                             f"peak {max(r[1] for r in runs) / 2**30:.2f} GiB"))
    mine = min(r[1] for r in rows)
    peers = [("scikit-learn KMeans fit+predict", lambda: sklearn_kmeans(pixels, k, 0)),
             ("scikit-learn MiniBatchKMeans (1 pass)", lambda: sklearn_minibatch(pixels, k, 0)),
             ("Pillow quantize (median cut)", lambda: pillow_quantize(pixels, k))]
    if pixels.shape[0] * pixels.shape[1] > MINIBATCH_MAX_PIXELS:
        # scikit-learn's MiniBatchKMeans took 326 s for one pass over 16.8 MP here (KMeans: 14 s).
        print(f"  ({peers.pop(1)[0]} skipped above {MINIBATCH_MAX_PIXELS / 1e6:.0f} MP)")
    for label, function in peers:
        seconds, compressed = time_peer(function, peers_repeats)
        rows.append((label, seconds, psnr(pixels, compressed), ""))
    height, width = pixels.shape[:2]
    print(f"\n{name}: {width}x{height} ({width * height / 1e6:.1f} MP), k={k}; medians of {repeats} job runs")
    print(f"  {'':34s} {'seconds':>9s} {'PSNR dB':>8s} {'time / best mixlib':>19s}")
    for label, seconds, quality, note in rows:
        print(f"  {label:34s} {seconds:9.2f} {quality:8.2f} {seconds / mine:19.2f}  {note}")
    return rows


def make_gigapixel(path, side, tile=2048):
    """A side x side RGB Zarr array of mosaic tiles cut from the sample photos, written chunk by chunk."""
    import dask.array as da
    import zarr

    sources = [np.asarray(Image.fromarray(photo(n)).resize((tile, tile), Image.BICUBIC))
               for n in ("china.jpg", "flower.jpg")]

    def tile_at(block_info=None):
        (r0, r1), (c0, c1), _ = block_info[None]["array-location"]
        i, j = r0 // tile, c0 // tile
        base = sources[(i + j) % 2]
        # Shift the colours a little per tile so the image is not one tile repeated.
        shifted = base.astype(np.int16) + np.array([(i * 7) % 23 - 11, (j * 5) % 19 - 9, (i + j) % 13 - 6])
        return np.clip(shifted, 0, 255).astype(np.uint8)[: r1 - r0, : c1 - c0]

    target = zarr.create_array(str(path), shape=(side, side, 3), chunks=(tile, tile, 3), dtype=np.uint8,
                               overwrite=True)
    image = da.map_blocks(tile_at, dtype=np.uint8, chunks=((tile,) * (side // tile), (tile,) * (side // tile), (3,)))
    da.store(image, target, lock=False)


def plain_read_seconds(path, scheduler_kwargs):
    """Time a plain Dask read of the Zarr array (sum of every pixel) on an embedded cluster like the job's."""
    import dask.array as da
    from distributed import Client, LocalCluster

    with LocalCluster(dashboard_address="127.0.0.1:0", **scheduler_kwargs) as cluster, Client(cluster):
        array = da.from_zarr(str(path))
        started = time.perf_counter()
        array.sum(dtype=np.uint64).compute()
        return time.perf_counter() - started


def gigapixel(workdir, k, side, processes):
    path = workdir / f"gigapixel-{side}.zarr"
    if not path.exists():
        started = time.perf_counter()
        make_gigapixel(path, side)
        print(f"\nbuilt {path} ({side}x{side}) in {time.perf_counter() - started:.0f} s")
    out = workdir / "gigapixel-out.zarr"
    flags = ["--processes" if processes else "--no-processes"]
    seconds, peak, report = run_job([path, "--k", k, "--out", out, *flags])
    cluster = {"n_workers": 2, "threads_per_worker": 1, "processes": processes}
    if processes:
        cluster["host"] = "127.0.0.1"
    read = plain_read_seconds(path, cluster)
    pixels = side * side
    print(f"\ngigapixel Zarr {side}x{side} ({pixels / 1e9:.2f} gigapixels), k={k}, "
          f"{'processes' if processes else 'threads'}:")
    print(f"  mixlib job          {seconds:8.1f} s  {pixels / seconds / 1e6:7.1f} Mpixel/s  peak {peak / 2**30:.2f} GiB"
          f"  PSNR {report['psnr_db']:.2f} dB  phases {report['seconds']}")
    print(f"  plain Dask read sum {read:8.1f} s  {pixels / read / 1e6:7.1f} Mpixel/s")
    print(f"  job / plain read    {seconds / read:8.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "mixlib-bench")
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="job runs per image (median)")
    parser.add_argument("--sizes", default="4096,8192", help="sides of the built images")
    parser.add_argument("--gigapixel-side", type=int, default=32768)
    parser.add_argument("--skip-gigapixel", action="store_true")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYTHONWARNINGS", "ignore")

    from sklearn.datasets import load_sample_image  # noqa: F401  (fail early without scikit-learn)

    images = [(n.removesuffix(".jpg"), photo(n)) for n in ("china.jpg", "flower.jpg")]
    images += [(f"built-{side}", built_image(side)) for side in map(int, args.sizes.split(","))]
    for name, pixels in images:
        path = args.workdir / f"{name}.png"
        if not path.exists():
            Image.fromarray(pixels).save(path)
        peers_repeats = args.repeats if pixels.shape[0] * pixels.shape[1] <= 4_000_000 else 1
        compare_on(name, pixels, path, args.k, args.repeats, args.workdir, peers_repeats)
    if not args.skip_gigapixel:
        gigapixel(args.workdir, args.k, args.gigapixel_side, processes=False)


if __name__ == "__main__":
    main()
