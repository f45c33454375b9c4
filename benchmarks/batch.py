"""Batch compression (issue 13's targets): `python -m jobs.compress FOLDER` against pngquant and libimagequant.

    python benchmarks/batch.py [--workdir DIR] [--megapixels 120] [--k 64] [--repeats 1] [--seed 0]

Needs the benchmark-only packages scikit-image (photos), pngquant-cli (the `pngquant` command) and imagequant
(libimagequant's Python binding): `pip install scikit-image pngquant-cli imagequant`. They are not mixlib's
dependencies. No network: only the photos that ship inside scikit-image and scikit-learn are used.

1. Corpus (kept in WORKDIR/corpus and reused while --megapixels and --seed are unchanged): real photos from
   scikit-image's `data` module (those that load offline) and scikit-learn's china.jpg and flower.jpg, turned by
   a seeded generator into a few hundred PNGs of --megapixels in all: a crop (50-100% of each side), a
   rescaling (0.5-2x, log-uniform), a rotation (0/90/180/270), and a mode (60% RGB, 20% grey, 20% RGBA with an
   alpha ramp of 32-255 across the image), in one folder per photo; plus `broken/truncated.png`, half of a PNG.
2. At --k colours, each timed as a whole (start-up and other fixed costs included):
   a. mixlib, the whole command: `python -m jobs.compress CORPUS --k K --out 'OUT/{relpath}.png'
      --report r.jsonl --dashboard-address 127.0.0.1:0` (exit status 4: the truncated file fails);
   b. pngquant over the same files, two at a time: `find CORPUS -name '*.png' | xargs -P2 ... pngquant --nofs K
      --force --output OUT2/RELPATH.png` (one small `sh -c` per file to name its output; the output folders are
      made before the clock starts; pngquant fails on the truncated file, so xargs exits 123);
   c. libimagequant (`imagequant.quantize_pil_image`, dithering 0, K colours) in a loop in this process:
      decode, quantise, save a PNG with Pillow.
   Medians over --repeats runs. Then, for each tool, the mean PSNR (dB) of its outputs against the originals
   (both decoded by Pillow; RGBA originals compared on RGBA values, the others on RGB, 8-bit; the truncated file
   skipped) and the total bytes of its outputs; and the ratios the issue's targets name.
3. One photo at k=256: china.jpg saved as PNG, the whole command `python -m jobs.compress photo.png --k 256
   --out x.png --dashboard-address 127.0.0.1:0` against scikit-learn's KMeans(256, n_init=1, random_state=0)
   fit + predict on the same pixels (float64 RGB), timed in this process; their time ratio and PSNR difference.

Wall times depend on what else the machine runs: the load average before and after is printed beside the
figures (the issue's targets were set on a 2-core machine shared with other work).
"""

import argparse
import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

Image.MAX_IMAGE_PIXELS = None

# scikit-image's colour photos that are candidates; each is used only if it loads without a download.
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
                  "retina", "motorcycle_left")
SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")
MODES = ("RGB", "L", "RGBA")
MODE_WEIGHTS = (0.6, 0.2, 0.2)
ROTATIONS = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}
MIN_SIDE = 32
ALPHA_LOW = 32  # the alpha ramp starts above 0: fully transparent pixels have no colour to compare
TRUNCATED = Path("broken") / "truncated.png"
PSNR_CAP = 100.0  # an output identical to its original counts as 100 dB


# ---------------------------------------------------------------------------------------------------- corpus


def source_photos():
    """The real colour photos that installed packages ship and that load offline: name -> (H, W, 3) uint8.

    scikit-image fetches some of its `data` images through pooch on first use; those raise here (no pooch,
    no cache, no network) and are skipped, as is a loader this version does not have.
    """
    import skimage.data
    from sklearn.datasets import load_sample_image

    photos, skipped = {}, []
    for name in SKIMAGE_PHOTOS:
        load = getattr(skimage.data, name, None)
        if name == "motorcycle_left" and load is None and hasattr(skimage.data, "stereo_motorcycle"):
            load = skimage.data.stereo_motorcycle  # (left, right, disparity)
        try:
            pixels = load() if load else None
            pixels = np.asarray(pixels[0] if isinstance(pixels, tuple) else pixels) if load else None
        except (ImportError, OSError, ValueError):  # a download it cannot make: no pooch, no network
            pixels = None
        if pixels is None or pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
            skipped.append(name)
            continue
        photos[name] = pixels
    for name in SKLEARN_PHOTOS:
        photos[Path(name).stem] = load_sample_image(name)
    return photos, skipped


def alpha_ramp(size, horizontal):
    """An 8-bit alpha channel of ``size`` (width, height) rising from ALPHA_LOW to 255 along one axis."""
    width, height = size
    ramp = np.linspace(ALPHA_LOW, 255, width if horizontal else height).round().astype(np.uint8)
    return Image.fromarray(np.broadcast_to(ramp[None, :] if horizontal else ramp[:, None], (height, width)).copy())


def variant(pixels, rng):
    """A seeded transform of one photo: crop, rescale, rotate, then a mode. Returns (image, description)."""
    height, width = pixels.shape[:2]
    crop_h = max(MIN_SIDE, int(height * rng.uniform(0.5, 1.0)))
    crop_w = max(MIN_SIDE, int(width * rng.uniform(0.5, 1.0)))
    top = int(rng.integers(0, height - crop_h + 1))
    left = int(rng.integers(0, width - crop_w + 1))
    image = Image.fromarray(pixels[top:top + crop_h, left:left + crop_w])
    scale = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
    size = (max(MIN_SIDE, round(crop_w * scale)), max(MIN_SIDE, round(crop_h * scale)))
    image = image.resize(size, Image.LANCZOS)
    rotation = int(rng.choice([0, 90, 180, 270]))
    if rotation:
        image = image.transpose(ROTATIONS[rotation])
    mode = str(rng.choice(MODES, p=MODE_WEIGHTS))
    if mode == "L":
        image = image.convert("L")
    elif mode == "RGBA":
        image = image.convert("RGBA")
        image.putalpha(alpha_ramp(image.size, horizontal=bool(rng.integers(2))))
    return image, f"{mode.lower()}-s{scale:.2f}-r{rotation}"


def build_corpus(folder, megapixels, seed):
    """Write the corpus into ``folder`` (or reuse one built with the same settings); return its manifest."""
    manifest_path = folder / "manifest.json"
    settings = {"megapixels": megapixels, "seed": seed}
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("settings") == settings:
            return manifest
    shutil.rmtree(folder, ignore_errors=True)
    photos, skipped = source_photos()
    names = sorted(photos)
    rng = np.random.default_rng(seed)
    images, pixels_total = [], 0
    while pixels_total < megapixels * 1e6:
        name = names[len(images) % len(names)]
        image, description = variant(photos[name], rng)
        relpath = Path(name) / f"{len(images):04d}-{description}.png"
        (folder / relpath).parent.mkdir(parents=True, exist_ok=True)
        image.save(folder / relpath)
        images.append({"path": str(relpath), "mode": image.mode, "width": image.width, "height": image.height})
        pixels_total += image.width * image.height
    write_truncated(folder / TRUNCATED, photos[names[0]])
    manifest = {"settings": settings, "photos": names, "skipped_photos": skipped, "images": images,
                "truncated": str(TRUNCATED)}
    manifest_path.write_text(json.dumps(manifest, indent=1))
    return manifest


def write_truncated(path, pixels):
    """A PNG cut to half its bytes: its header reads, its pixel data ends early."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels)
    image.save(path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def describe_corpus(manifest):
    """One paragraph: the photos used and skipped, the count, megapixels and modes of the corpus."""
    images = manifest["images"]
    megapixels = sum(i["width"] * i["height"] for i in images) / 1e6
    modes = {mode: sum(i["mode"] == mode for i in images) for mode in MODES}
    sides = [max(i["width"], i["height"]) for i in images]
    skipped = manifest["skipped_photos"]
    return (f"corpus: {len(images)} PNGs + 1 truncated, {megapixels:.1f} megapixels "
            f"({modes['RGB']} RGB, {modes['L']} grey, {modes['RGBA']} RGBA; longest side {min(sides)}-{max(sides)} px) "
            f"from {len(manifest['photos'])} photos: {', '.join(manifest['photos'])}"
            + (f"; not available offline: {', '.join(skipped)}" if skipped else ""))


# ---------------------------------------------------------------------------------------------------- tools


def run_timed(command, log, cwd=None, shell=False):
    """Run ``command``, its output to ``log``; return (wall seconds, exit status)."""
    with open(log, "wb") as out:
        start = time.perf_counter()
        status = subprocess.run(command, check=False, cwd=cwd, shell=shell, stdout=out,
                                stderr=subprocess.STDOUT).returncode
        return time.perf_counter() - start, status


def mixlib_batch(corpus, out, report, k, log):
    """The whole batch job over the corpus folder: (seconds, exit status)."""
    command = [sys.executable, "-m", "jobs.compress", str(corpus), "--k", str(k), "--out", f"{out}/{{relpath}}.png",
               "--report", str(report), "--dashboard-address", "127.0.0.1:0"]
    return run_timed(command, log, cwd=out.parent)


def pngquant_binary():
    """The pngquant that the pngquant-cli package installs beside this Python, else the one on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "pngquant"
    found = str(beside) if beside.exists() else shutil.which("pngquant")
    if not found:
        sys.exit("pngquant not found: pip install pngquant-cli")
    return found


def pngquant_batch(corpus, out, k, log, relpaths):
    """pngquant over every PNG of the corpus, two at a time, each output at OUT/RELPATH: (seconds, status)."""
    for relpath in relpaths:
        (out / relpath).parent.mkdir(parents=True, exist_ok=True)
    per_file = (f'exec {shlex.quote(pngquant_binary())} --nofs {k} --force '
                f'--output "$2/${{1#"$3"/}}" -- "$1"')
    command = (f"find {shlex.quote(str(corpus))} -name '*.png' -print0 | "
               f"xargs -0 -P2 -I{{}} sh -c {shlex.quote(per_file)} _ {{}} {shlex.quote(str(out))} "
               f"{shlex.quote(str(corpus))}")
    return run_timed(command, log, shell=True)


def imagequant_batch(corpus, out, k, relpaths):
    """libimagequant (dithering 0) over the corpus in this process: (seconds, files that failed)."""
    import imagequant

    failed = 0
    start = time.perf_counter()
    for relpath in relpaths:
        try:
            with Image.open(corpus / relpath) as image:
                image.load()
                quantised = imagequant.quantize_pil_image(image, dithering_level=0.0, max_colors=k)
        except OSError:
            failed += 1
            continue
        target = out / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        quantised.save(target)
    return time.perf_counter() - start, failed


# ---------------------------------------------------------------------------------------------------- quality


def psnr(original, compressed):
    """PSNR in dB of two uint8 arrays of one shape (capped at PSNR_CAP for identical arrays)."""
    mse = np.mean((original.astype(np.float64) - compressed.astype(np.float64)) ** 2)
    return PSNR_CAP if mse == 0 else min(PSNR_CAP, 10 * math.log10(255.0 ** 2 / mse))


def decoded(path, mode):
    """The image at ``path`` as a uint8 array in ``mode`` (RGB or RGBA)."""
    with Image.open(path) as image, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's note on palette PNGs with a tRNS chunk converted to RGB
        return np.asarray(image.convert(mode))


def quality(corpus, outputs, relpaths):
    """For each tool's output folder: mean PSNR against the originals, total bytes, outputs missing.

    Each original is decoded once and compared with every tool's output of it.
    """
    scores = {tool: {} for tool in outputs}
    sizes = {tool: 0 for tool in outputs}
    missing = {tool: 0 for tool in outputs}
    for relpath in relpaths:
        with Image.open(corpus / relpath) as image:
            mode = "RGBA" if image.mode == "RGBA" else "RGB"
        original = decoded(corpus / relpath, mode)
        for tool, folder in outputs.items():
            path = folder / relpath
            if not path.exists():
                missing[tool] += 1
                continue
            scores[tool][str(relpath)] = psnr(original, decoded(path, mode))
            sizes[tool] += path.stat().st_size
    return {tool: {"psnr": statistics.fmean(scores[tool].values()) if scores[tool] else float("nan"),
                   "bytes": sizes[tool], "missing": missing[tool], "scores": scores[tool]} for tool in outputs}


def report_notes(report_path, corpus, own_scores):
    """What mixlib's report says beyond the figures: statuses, failures, slow images, iterations, PSNR check."""
    records = [json.loads(line) for line in Path(report_path).read_text().splitlines() if line.strip()]
    statuses = {}
    for record in records:
        statuses[record["status"]] = statuses.get(record["status"], 0) + 1
    notes = [f"report: {len(records)} records, " + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))]
    for record in records:
        if record["status"] == "failed":
            notes.append(f"  failed: {Path(record['input']).relative_to(corpus)}: {record['reason']}")
    written = [r for r in records if r["status"] == "written"]
    if written:
        seconds = sorted(written, key=lambda r: r["seconds"], reverse=True)
        total = sum(r["seconds"] for r in written)
        median = statistics.median(r["seconds"] for r in written)
        megapixels = sum(r["width"] * r["height"] for r in written) / 1e6
        notes.append(f"  task seconds: {total:.1f} in all, median {median:.3f} s an image, "
                     f"{megapixels / total:.2f} MP per task-second")
        for r in seconds[:3]:
            notes.append(f"  slowest: {Path(r['input']).relative_to(corpus)} {r['width']}x{r['height']} {r['mode']}, "
                         f"{r['distinct_colours']} colours, {r['iterations']} iterations, {r['seconds']:.2f} s")
        iterations = [r["iterations"] for r in written]
        notes.append(f"  Lloyd iterations: median {statistics.median(iterations)}, max {max(iterations)}")
        reported = {str(Path(r["input"]).relative_to(corpus)): r["psnr_db"] for r in written}
        gaps = [abs(reported[p] - own_scores[p]) for p in reported if p in own_scores]
        if gaps:
            notes.append(f"  report psnr_db against this script's PSNR: largest gap {max(gaps):.4f} dB")
    return notes


# ---------------------------------------------------------------------------------------------------- k = 256


def single_photo(folder, repeats):
    """china.jpg at k=256: the whole mixlib command against scikit-learn KMeans fit + predict. Returns a dict."""
    from sklearn.cluster import KMeans
    from sklearn.datasets import load_sample_image

    folder.mkdir(parents=True, exist_ok=True)
    pixels = load_sample_image("china.jpg")
    photo = folder / "photo.png"
    Image.fromarray(pixels).save(photo)
    out = folder / "x.png"
    job_times = []
    for _ in range(repeats):
        out.unlink(missing_ok=True)
        command = [sys.executable, "-m", "jobs.compress", photo.name, "--k", "256", "--out", out.name,
                   "--dashboard-address", "127.0.0.1:0"]
        seconds, status = run_timed(command, folder / "mixlib-k256.log", cwd=folder)
        if status != 0:
            sys.exit(f"mixlib k=256 exited {status}; see {folder / 'mixlib-k256.log'}")
        job_times.append(seconds)
    job_psnr = psnr(pixels, decoded(out, "RGB"))

    points = pixels.reshape(-1, 3).astype(np.float64)
    sk_times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model = KMeans(256, n_init=1, random_state=0).fit(points)
        labels = model.predict(points)
        sk_times.append(time.perf_counter() - start)
    rebuilt = np.clip(np.rint(model.cluster_centers_[labels]), 0, 255).astype(np.uint8).reshape(pixels.shape)
    return {"pixels": pixels.shape[0] * pixels.shape[1], "job_seconds": statistics.median(job_times),
            "job_psnr": job_psnr, "sklearn_seconds": statistics.median(sk_times), "sklearn_psnr": psnr(pixels, rebuilt)}


# ---------------------------------------------------------------------------------------------------- main


def verdict(ok):
    return "meets target" if ok else "MISSES target"


def load_text():
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "mixlib-bench-batch",
                        help="corpus and outputs (the corpus is reused while its settings hold)")
    parser.add_argument("--megapixels", type=float, default=120, help="corpus size, megapixels")
    parser.add_argument("--k", type=int, default=64, help="palette size of the batch comparison")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of each tool (medians)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the corpus generator")
    args = parser.parse_args()

    workdir = args.workdir.resolve()
    corpus = workdir / "corpus"
    started = time.perf_counter()
    manifest = build_corpus(corpus, args.megapixels, args.seed)
    relpaths = [Path(i["path"]) for i in manifest["images"]]
    every_file = relpaths + [Path(manifest["truncated"])]
    print(describe_corpus(manifest), f"(built in {time.perf_counter() - started:.0f} s)", flush=True)
    print(f"before: {load_text()}", flush=True)

    runs = workdir / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    times = {"mixlib": [], "pngquant": [], "imagequant": []}
    statuses = {}
    for repeat in range(args.repeats):
        run = runs / f"run{repeat}"
        outputs = {tool: run / f"out-{tool}" for tool in times}  # not run/mixlib: `-m` puts the cwd on sys.path
        for folder in outputs.values():
            folder.mkdir(parents=True)
        seconds, statuses["mixlib"] = mixlib_batch(corpus, outputs["mixlib"], run / "r.jsonl", args.k,
                                                   run / "mixlib.log")
        if statuses["mixlib"] not in (0, 4):
            sys.exit(f"mixlib exited {statuses['mixlib']}; see {run / 'mixlib.log'}")
        times["mixlib"].append(seconds)
        print(f"run {repeat}: mixlib {seconds:.1f} s (exit {statuses['mixlib']})", flush=True)
        seconds, statuses["pngquant"] = pngquant_batch(corpus, outputs["pngquant"], args.k, run / "pngquant.log",
                                                       every_file)
        times["pngquant"].append(seconds)
        print(f"run {repeat}: pngquant -P2 {seconds:.1f} s (exit {statuses['pngquant']})", flush=True)
        seconds, statuses["imagequant"] = imagequant_batch(corpus, outputs["imagequant"], args.k, every_file)
        times["imagequant"].append(seconds)
        print(f"run {repeat}: libimagequant {seconds:.1f} s ({statuses['imagequant']} failed)", flush=True)
    print(f"after the batches: {load_text()}", flush=True)

    results = quality(corpus, outputs, relpaths)
    seconds = {tool: statistics.median(t) for tool, t in times.items()}
    labels = {"mixlib": "mixlib job (whole command)", "pngquant": "pngquant --nofs, xargs -P2",
              "imagequant": "libimagequant, dither 0 (in-process)"}
    print()
    print(f"k={args.k}, {len(relpaths)} images + 1 truncated, median of {args.repeats} run(s)")
    print(f"{'tool':<44}{'seconds':>9}{'mean PSNR dB':>14}{'bytes out':>13}{'compared':>10}")
    for tool, label in labels.items():
        r = results[tool]
        print(f"{label:<44}{seconds[tool]:>9.2f}{r['psnr']:>14.3f}{r['bytes']:>13,}"
              f"{len(r['scores']):>10}")
    print(f"exit statuses: mixlib {statuses['mixlib']} (4 expected), xargs/pngquant {statuses['pngquant']} "
          f"(123 expected), libimagequant loop: {statuses['imagequant']} file(s) unreadable (1 expected)")
    time_ratio = seconds["mixlib"] / seconds["pngquant"]
    psnr_gain = results["mixlib"]["psnr"] - results["imagequant"]["psnr"]
    bytes_ratio = results["mixlib"]["bytes"] / results["pngquant"]["bytes"]
    print(f"mixlib time / pngquant time   = {time_ratio:.3f}   (target <= 1)        {verdict(time_ratio <= 1)}")
    print(f"mixlib PSNR - libimagequant   = {psnr_gain:+.3f} dB (target >= +0.3 dB) {verdict(psnr_gain >= 0.3)}")
    print(f"mixlib bytes / pngquant bytes = {bytes_ratio:.3f}   (target <= 1)        {verdict(bytes_ratio <= 1)}")
    for note in report_notes(run / "r.jsonl", corpus, results["mixlib"]["scores"]):
        print(note)
    print(flush=True)

    one = single_photo(workdir / "k256", args.repeats)
    print(f"one photo (china.jpg, {one['pixels'] / 1e6:.2f} MP) at k=256, median of {args.repeats} run(s)")
    print(f"{'tool':<44}{'seconds':>9}{'PSNR dB':>14}")
    print(f"{'mixlib job (whole command)':<44}{one['job_seconds']:>9.2f}{one['job_psnr']:>14.3f}")
    label = "scikit-learn KMeans n_init=1 (fit+predict)"
    print(f"{label:<44}{one['sklearn_seconds']:>9.2f}{one['sklearn_psnr']:>14.3f}")
    ratio = one["job_seconds"] / one["sklearn_seconds"]
    gap = one["job_psnr"] - one["sklearn_psnr"]
    print(f"mixlib time / sklearn time    = {ratio:.3f}   (target <= 0.25)     {verdict(ratio <= 0.25)}")
    print(f"mixlib PSNR - sklearn PSNR    = {gap:+.3f} dB (target within 0.05 dB) {verdict(abs(gap) <= 0.05)}")
    print(f"after: {load_text()}; whole benchmark {time.perf_counter() - started:.0f} s; logs in {runs}")


if __name__ == "__main__":
    main()
