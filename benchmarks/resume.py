"""A >= 1-gigapixel compress killed during its colour-histogram pass, then resumed from its checkpoint.

    python benchmarks/resume.py [--workdir DIR] [--side 32768] [--kill-at 0.5] [--checkpoint-url]

Runs `python -m jobs.compress` on the generated gigapixel Zarr image (the one `benchmarks/compress.py` builds)
three times: uninterrupted; with `--checkpoint-dir`, killed with SIGKILL once a fraction `--kill-at` of the block
histograms are saved; and again with `--resume`. It prints the wall time of each run and the saved fraction, and
checks that the resumed output equals the uninterrupted one array by array (labels and palette).
"""

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from compress import ROOT, make_gigapixel

from mixlib.image.colors import saved_block_shape


def command(*args):
    return [sys.executable, "-m", "jobs.compress", *map(str, args), "--overwrite", "--log-level", "warning",
            "--dashboard-address", "127.0.0.1:0", "--progress-seconds", "0"]


def timed(args):
    started = time.perf_counter()
    done = subprocess.run(command(*args), cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"job failed ({done.returncode}): {done.stderr}")
    return time.perf_counter() - started


def killed_when_saved(args, folder, count):
    """Run the job; SIGKILL it once ``count`` block histograms are in ``folder``. Returns (seconds, saved)."""
    started = time.perf_counter()
    process = subprocess.Popen(command(*args), cwd=ROOT, stderr=subprocess.DEVNULL)

    def saved():
        try:
            return sum(1 for p in folder.glob("r*-c*") if not p.name.startswith("."))
        except FileNotFoundError:
            return 0

    while process.poll() is None and saved() < count:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    if process.returncode != -signal.SIGKILL:
        raise RuntimeError(f"the job ended ({process.returncode}) before it could be killed")
    return time.perf_counter() - started, saved()


def same_output(a, b):
    import zarr

    first, second = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    return all(np.array_equal(first[name][...], second[name][...]) for name in ("labels", "palette"))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "mixlib-bench")
    parser.add_argument("--side", type=int, default=32768)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--kill-at", type=float, default=0.5, help="fraction of block histograms saved at the kill")
    parser.add_argument("--checkpoint-url", action="store_true", help="name the checkpoint folder by a file:// URL")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    image = args.workdir / f"gigapixel-{args.side}.zarr"
    if not image.exists():
        make_gigapixel(image, args.side)
    import zarr

    array = zarr.open_array(str(image), mode="r")
    blocks = int(np.prod([-(-n // b) for n, b in zip(array.shape[:2], saved_block_shape(array.chunks[:2]))]))
    folder = args.workdir / "resume-checkpoint"
    shutil.rmtree(folder, ignore_errors=True)
    checkpoint = folder.as_uri() if args.checkpoint_url else folder
    common = [image, "--k", args.k, "--chunk-size", array.chunks[0]]  # one Dask chunk per Zarr chunk

    whole = timed([*common, "--out", args.workdir / "resume-whole.zarr"])
    out = args.workdir / "resume-resumed.zarr"
    shutil.rmtree(out, ignore_errors=True)
    until_kill, saved = killed_when_saved([*common, "--out", out, "--checkpoint-dir", checkpoint], folder,
                                          round(args.kill_at * blocks))
    left_output = out.exists()
    resumed = timed([*common, "--out", out, "--checkpoint-dir", checkpoint, "--resume"])
    print(f"{args.side}x{args.side} Zarr ({args.side ** 2 / 1e9:.2f} gigapixels, {blocks} block histograms), "
          f"k={args.k}:")
    print(f"  uninterrupted run            {whole:7.1f} s")
    print(f"  killed run (SIGKILL)         {until_kill:7.1f} s  {saved} of {blocks} block histograms saved; "
          f"output left behind: {left_output}")
    print(f"  resumed run (--resume)       {resumed:7.1f} s  ({resumed / whole:.2f} of the uninterrupted run)")
    print(f"  resumed output == uninterrupted output: {same_output(args.workdir / 'resume-whole.zarr', out)}; "
          f"checkpoint removed: {not folder.exists()}")


if __name__ == "__main__":
    main()
