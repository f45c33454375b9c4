"""The Python API against its peers, in one run, with the ratios the issue's targets name.

1. ``mixlib.KMeans(16)`` on a Dask array of N photo colours (default 20 million) against dask-ml's ``KMeans(16)``
   on the same persisted array and cluster; inertia compared.
2. ``mixlib.KMeans(16)`` on a numpy array of a photo's pixels against scikit-learn's ``KMeans(16, n_init=1)``
   (medians over seeds; first calls timed apart: they load the compiled loops).
3. ``mixlib.GaussianMixture(5)`` on the Dask array against scikit-learn's ``GaussianMixture(5)`` on the numpy array;
   mean log-likelihood per point compared.

The colours come from scikit-learn's sample photos, rescaled by Pillow at many sizes (the resampling makes new
colours) until N points. The cluster: 2 worker processes x 1 thread on 127.0.0.1 (the machine has 2 cores).
dask-ml is a benchmark-only dependency: ``pip install dask-ml``.

    python benchmarks/api.py [--points 20000000] [--repeats 3] [--skip-sklearn-gmm]
"""

import argparse
import statistics
import time

import numpy as np


def photo_colours(n, seed=0):
    """``(n, 3)`` float64 colours of the sample photos, rescaled to random sizes, in random order."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(image) for image in load_sample_images().images]
    parts, total = [], 0
    while total < n:
        photo = photos[len(parts) % len(photos)]
        scale = rng.uniform(0.3, 1.7)
        size = (max(8, int(photo.width * scale)), max(8, int(photo.height * scale)))
        pixels = np.asarray(photo.resize(size, Image.BILINEAR)).reshape(-1, 3)
        parts.append(pixels)
        total += len(pixels)
    colours = np.concatenate(parts)[:n].astype(np.float64)
    return colours[rng.permutation(n)]


def timed(function, repeats=1):
    """``(median seconds, last result)`` of ``repeats`` calls of ``function()``."""
    seconds, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), result


def ratio_line(what, ours, theirs, target, higher_is_better=False):
    ratio = ours / theirs
    met = ratio >= target if higher_is_better else ratio <= target
    sign = ">=" if higher_is_better else "<="
    return f"{what}: {ratio:.3f} (target {sign} {target}) {'meets target' if met else 'MISSES target'}"


def dask_kmeans(X, repeats):
    import dask_ml.cluster

    from mixlib import KMeans

    ours_s, ours = timed(lambda: KMeans(16, random_state=0).fit(X), repeats)
    theirs_s, theirs = timed(lambda: dask_ml.cluster.KMeans(16, random_state=0).fit(X), repeats)
    print(f"KMeans(16), Dask array of {X.shape[0] / 1e6:.0f}M points: mixlib {ours_s:.2f} s ({ours.n_iter_} "
          f"iterations), dask-ml {theirs_s:.2f} s ({theirs.n_iter_} iterations)")
    ours_inertia, theirs_inertia = (inertia(X, model.cluster_centers_) for model in (ours, theirs))
    print(f"  inertia (this script's, of each model's centres): mixlib {ours_inertia:.6g}, dask-ml "
          f"{theirs_inertia:.6g} (ratio {ours_inertia / theirs_inertia:.4f}); reported: mixlib {ours.inertia_:.6g}, "
          f"dask-ml {theirs.inertia_:.6g}")
    print("  " + ratio_line("time ratio mixlib / dask-ml", ours_s, theirs_s, 0.2))
    print(f"  inertia no worse: {'meets target' if ours_inertia <= theirs_inertia * 1.0001 else 'MISSES target'}")


def inertia(X, centres):
    """Sum of squared distances of the rows of the Dask array ``X`` to their nearest centre, in plain numpy."""
    def block_sum(block):
        squared = ((block[:, None, :] - centres[None]) ** 2).sum(axis=2)
        return np.array([squared.min(axis=1).sum()])

    return float(X.map_blocks(block_sum, drop_axis=1, chunks=(1,), dtype=np.float64).sum().compute())


def numpy_kmeans(repeats):
    from sklearn.cluster import KMeans as SkKMeans
    from sklearn.datasets import load_sample_image

    from mixlib import KMeans

    pixels = load_sample_image("china.jpg").reshape(-1, 3).astype(np.float64)
    first, _ = timed(lambda: KMeans(16, random_state=0).fit(pixels))
    ours, theirs = [], []
    for seed in range(repeats):
        ours.append(timed(lambda: KMeans(16, random_state=seed).fit(pixels)))
        theirs.append(timed(lambda: SkKMeans(16, n_init=1, random_state=seed).fit(pixels)))
    ours_s, theirs_s = (statistics.median(s for s, _ in runs) for runs in (ours, theirs))
    ours_inertia, theirs_inertia = (statistics.mean(m.inertia_ for _, m in runs) for runs in (ours, theirs))
    print(f"KMeans(16), numpy array of china.jpg's {len(pixels)} pixels: mixlib {ours_s:.3f} s (first call "
          f"{first:.3f} s), scikit-learn {theirs_s:.3f} s; mean inertia ratio {ours_inertia / theirs_inertia:.4f}")
    print("  " + ratio_line("time ratio mixlib / scikit-learn", ours_s, theirs_s, 0.5))


def gaussian_mixture(X, X_numpy, skip_sklearn):
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    from mixlib import GaussianMixture

    ours_s, ours = timed(lambda: GaussianMixture(5, random_state=0).fit(X))
    ours_score = ours.score(X)
    print(f"GaussianMixture(5), {X.shape[0] / 1e6:.0f}M points: mixlib {ours_s:.2f} s ({ours.n_iter_} iterations), "
          f"mean log-likelihood {ours_score:.5f}")
    every_s, every = timed(lambda: GaussianMixture(5, random_state=0, merge_duplicates=False).fit(X))
    print(f"  mixlib on every row (merge_duplicates=False): {every_s:.2f} s ({every.n_iter_} iterations), mean "
          f"log-likelihood {every.score(X):.5f}")
    if skip_sklearn:
        return
    theirs_s, theirs = timed(lambda: SkGaussianMixture(5, random_state=0).fit(X_numpy))
    theirs_score = theirs.score(X_numpy)
    print(f"  scikit-learn {theirs_s:.2f} s ({theirs.n_iter_} iterations), mean log-likelihood {theirs_score:.5f}")
    print("  " + ratio_line("speed-up scikit-learn / mixlib", theirs_s, ours_s, 20.0, higher_is_better=True))
    gap = theirs_score - ours_score
    print(f"  log-likelihood gap {gap:.5f} nats per point (target <= 0.01) "
          f"{'meets target' if gap <= 0.01 else 'MISSES target'}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=20_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk-rows", type=int, default=1 << 20)
    parser.add_argument("--skip-sklearn-gmm", action="store_true")
    args = parser.parse_args()

    import dask.array as da
    from distributed import Client, LocalCluster

    numpy_kmeans(args.repeats)
    colours = photo_colours(args.points)
    distinct = len(np.unique(colours.astype(np.uint8).view("V3")))
    print(f"{args.points} photo colours, {distinct} distinct")
    cluster_options = {"n_workers": 2, "threads_per_worker": 1, "host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}
    with LocalCluster(**cluster_options) as cluster, Client(cluster):
        X = da.from_array(colours, chunks=(args.chunk_rows, 3)).persist()
        dask_kmeans(X, args.repeats)
        gaussian_mixture(X, colours, args.skip_sklearn_gmm)


if __name__ == "__main__":
    main()
