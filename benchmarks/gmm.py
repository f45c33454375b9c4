"""Benchmark of `python -m jobs.compress --method gmm` against scikit-learn's GaussianMixture, in one run.

    python benchmarks/gmm.py [--workdir DIR] [--ks 5,16] [--repeats 3] [--side 2048]

For scikit-learn's sample photos and a side x side image built from them (4 megapixels by default), for each
k: the whole job's wall time (`python -m jobs.compress --method gmm`, start-up and decoding included), its EM
iterations and mean log-likelihood per pixel, beside scikit-learn's GaussianMixture(covariance_type="full")
fitted on the same pixels (float64) with the same absolute reg_covar, and the ratio of the times.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compress import built_image, photo  # noqa: E402  (the same images as benchmarks/compress.py)

ROOT = Path(__file__).resolve().parent.parent
REG_COVAR = 1e-6  # relative to the mean colour variance, the job's default


def run_job(path, k, seed, workdir):
    report = workdir / "report.json"
    command = [sys.executable, "-m", "jobs.compress", str(path), "--method", "gmm", "--k", str(k),
               "--seed", str(seed), "--out", str(workdir / "out.png"), "--report", str(report), "--overwrite",
               "--no-processes", "--log-level", "warning", "--dashboard-address", "127.0.0.1:0"]
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True)
    return time.perf_counter() - started, json.loads(report.read_text())


def sklearn_gmm(pixels, k, seed):
    from sklearn.mixture import GaussianMixture

    x = pixels.reshape(-1, pixels.shape[2]).astype(np.float64)
    reg = REG_COVAR * float(np.mean(np.var(x, axis=0)))
    started = time.perf_counter()
    model = GaussianMixture(k, covariance_type="full", reg_covar=reg, random_state=seed).fit(x)
    seconds = time.perf_counter() - started
    return seconds, model.n_iter_, float(model.score(x))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "mixlib-bench-gmm")
    parser.add_argument("--ks", default="5,16")
    parser.add_argument("--repeats", type=int, default=3, help="job runs per case (median)")
    parser.add_argument("--side", type=int, default=2048, help="side of the built image (2048: 4 megapixels)")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    images = [("china", photo("china.jpg")), ("flower", photo("flower.jpg")),
              (f"built-{args.side}", built_image(args.side))]
    print(f"{'image':14s} {'k':>3s} {'mixlib s':>9s} {'sklearn s':>9s} {'sklearn/mixlib':>14s} "
          f"{'iters':>11s} {'loglik/pixel mixlib':>20s} {'sklearn':>9s} {'difference':>10s}")
    for name, pixels in images:
        path = args.workdir / f"{name}.png"
        Image.fromarray(pixels).save(path)
        for k in map(int, args.ks.split(",")):
            runs = [run_job(path, k, 0, args.workdir) for _ in range(args.repeats)]
            seconds = statistics.median(r[0] for r in runs)
            report = runs[-1][1]
            sk_seconds, sk_iterations, sk_loglik = sklearn_gmm(pixels, k, 0)
            mine = report["mean_loglik_per_pixel"]
            print(f"{name:14s} {k:3d} {seconds:9.2f} {sk_seconds:9.2f} {sk_seconds / seconds:14.2f} "
                  f"{report['em_iterations']:5d}/{sk_iterations:<5d} {mine:20.4f} {sk_loglik:9.4f} "
                  f"{mine - sk_loglik:+10.4f}", flush=True)


if __name__ == "__main__":
    main()
