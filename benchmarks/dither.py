"""Dithering (issue 17's targets): `--dither floyd-steinberg` against pngquant's default (dithered) output, and its
cost on a gigapixel Zarr image.

    python benchmarks/dither.py [--workdir DIR] [--k 16] [--skip-gigapixel] [--gigapixel-side 32768]

Needs the benchmark-only packages scikit-image (photos) and pngquant-cli (the `pngquant` command). No network: the
photos are those that ship inside scikit-image and scikit-learn (benchmarks/batch.py's `source_photos`).

1. Quality at --k colours on every photo, as the eye sees it: the PSNR (dB) of the output blurred by a Gaussian of
   sigma 1 pixel against the original blurred alike (RGB, float64), for
   a. pngquant's default output (`pngquant K`: its own palette, dithered) and `pngquant --nofs K` (undithered);
   b. mixlib (`mixlib.quantise`, the job's palette and mapping) undithered, Floyd-Steinberg, ordered;
   c. mixlib's palette dithered by Pillow's Floyd-Steinberg (`Image.quantize(palette=..., dither=FLOYDSTEINBERG)`),
      a reference for the dithering alone.
   Then the means and the targets: Floyd-Steinberg >= pngquant dithered + 1.5 dB and >= mixlib undithered + 1.0 dB.
2. A gigapixel Zarr image (benchmarks/compress.py's mosaic of the sample photos, built once in WORKDIR): the whole
   job at --k undithered and with `--dither floyd-steinberg`, each as a command (start-up included) on the
   embedded cluster, with the peak memory of its process tree; the time ratio (target <= 1.5) and the peak (target
   <= 4 GiB).
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from batch import pngquant_binary, source_photos  # noqa: E402
from compress import make_gigapixel, run_job  # noqa: E402


def blurred(pixels):
    """``pixels (H, W, 3)`` as float64, each channel blurred by a Gaussian of sigma 1 pixel."""
    from scipy.ndimage import gaussian_filter

    return np.stack([gaussian_filter(pixels[..., c].astype(np.float64), 1.0) for c in range(3)], axis=-1)


def blurred_psnr(original, output):
    mse = ((blurred(original) - blurred(output)) ** 2).mean()
    return 10 * np.log10(255.0 ** 2 / mse)


def pngquant_pixels(pixels, k, folder, dithered):
    """pngquant's output of ``pixels`` at ``k`` colours (its default dithering, or ``--nofs``), as RGB."""
    source, out = folder / "source.png", folder / "pngquant.png"
    Image.fromarray(pixels).save(source)
    flags = [] if dithered else ["--nofs"]
    subprocess.run([pngquant_binary(), *flags, str(k), "--force", "--output", str(out), str(source)], check=True)
    return np.asarray(Image.open(out).convert("RGB"))


def pillow_dithered(pixels, palette):
    """``pixels`` mapped to ``palette (p, 3)`` by Pillow's Floyd-Steinberg."""
    holder = Image.new("P", (1, 1))
    holder.putpalette(palette.ravel().tolist())
    mapped = Image.fromarray(pixels).quantize(palette=holder, dither=Image.Dither.FLOYDSTEINBERG)
    return np.asarray(mapped.convert("RGB"))


def quality(k, folder):
    from mixlib import quantise

    photos, skipped = source_photos()
    if skipped:
        print(f"(scikit-image photos that need a download, skipped: {', '.join(skipped)})")
    columns = ("pngquant", "pngquant --nofs", "mixlib none", "mixlib floyd-steinberg", "mixlib ordered",
               "mixlib palette, Pillow FS")
    print(f"\nblurred PSNR (dB, Gaussian sigma 1) at k={k}:")
    print(f"  {'photo':22s}" + "".join(f"{c:>26s}" for c in columns))
    rows = []
    for name, pixels in photos.items():
        plain = quantise(pixels, k)
        outputs = (pngquant_pixels(pixels, k, folder, True), pngquant_pixels(pixels, k, folder, False),
                   plain.pixels, quantise(pixels, k, dither="floyd-steinberg").pixels,
                   quantise(pixels, k, dither="ordered").pixels, pillow_dithered(pixels, plain.palette))
        rows.append([blurred_psnr(pixels, output) for output in outputs])
        print(f"  {name:22s}" + "".join(f"{value:26.2f}" for value in rows[-1]))
    means = np.mean(rows, axis=0)
    print(f"  {'mean of ' + str(len(rows)):22s}" + "".join(f"{value:26.2f}" for value in means))
    over_pngquant, over_plain = means[3] - means[0], means[3] - means[2]
    print(f"  Floyd-Steinberg - pngquant dithered: {over_pngquant:+.2f} dB (target >= +1.5: "
          f"{'met' if over_pngquant >= 1.5 else 'missed'})")
    print(f"  Floyd-Steinberg - mixlib undithered: {over_plain:+.2f} dB (target >= +1.0: "
          f"{'met' if over_plain >= 1.0 else 'missed'})")


def gigapixel(workdir, k, side):
    path = workdir / f"gigapixel-{side}.zarr"
    if not path.exists():
        make_gigapixel(path, side)
    print(f"\ngigapixel Zarr {side}x{side} ({side * side / 1e9:.2f} gigapixels), k={k}, one run each:")
    results = {}
    for method in ("none", "floyd-steinberg"):
        out = workdir / f"gigapixel-dither-{method}.zarr"
        seconds, peak, report = run_job([path, "--k", k, "--out", out, "--dither", method])
        results[method] = seconds
        print(f"  --dither {method:16s} {seconds:7.1f} s  peak {peak / 2 ** 30:.2f} GiB  PSNR {report['psnr_db']:.2f} "
              f"dB  phases {report['seconds']}")
    ratio = results["floyd-steinberg"] / results["none"]
    print(f"  floyd-steinberg / none: {ratio:.2f} (target <= 1.5: {'met' if ratio <= 1.5 else 'missed'})")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "mixlib-bench")
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--gigapixel-side", type=int, default=32768)
    parser.add_argument("--skip-gigapixel", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    if not args.skip_quality:
        with tempfile.TemporaryDirectory() as folder:
            quality(args.k, Path(folder))
    if not args.skip_gigapixel:
        gigapixel(args.workdir, args.k, args.gigapixel_side)


if __name__ == "__main__":
    main()
