"""Palette controls (issue 17's targets): a shared palette over a video clip's frames against a palette per frame,
`--dither floyd-steinberg` against pngquant's default (dithered) output, and its cost on a gigapixel Zarr image.

    python benchmarks/palettes.py [--workdir DIR] [--k 16] [--clip-k 64] [--skip-gigapixel] [--gigapixel-side 32768]
                                  [--gigapixel-runs 3]

Needs the benchmark-only packages scikit-image (photos) and pngquant-cli (the `pngquant` command). No network: the
photos are those that ship inside scikit-image and scikit-learn (benchmarks/batch.py's `source_photos`).

1. Video clips: 48 frames of 240x320 of a camera panning and zooming over each sample photo of scikit-learn
   (china.jpg, flower.jpg): "pan", across a third of the photo and 1.25x closer, and "sweep", across all of it and
   2x closer (CLIPS); at --clip-k colours: the mean over frames of their PSNR (dB) with one palette fitted to
   the clip (`mixlib.image.quantise.quantise_frames`, what the job does to an animation) and with a palette fitted
   to each frame (`mixlib.quantise`); target: the shared palette within 0.3 dB of the per-frame ones.
2. Quality at --k colours on every photo, as the eye sees it: the PSNR (dB) of the output blurred by a Gaussian of
   sigma 1 pixel against the original blurred alike (RGB, float64), for
   a. pngquant's default output (`pngquant K`: its own palette, dithered) and `pngquant --nofs K` (undithered);
   b. mixlib (`mixlib.quantise`, the job's palette and mapping) undithered, Floyd-Steinberg, ordered;
   c. mixlib's palette dithered by Pillow's Floyd-Steinberg (`Image.quantize(palette=..., dither=FLOYDSTEINBERG)`),
      a reference for the dithering alone.
   Then the means and the targets: Floyd-Steinberg >= pngquant dithered + 1.5 dB and >= mixlib undithered + 1.0 dB.
3. A gigapixel Zarr image (benchmarks/compress.py's mosaic of the sample photos, built once in WORKDIR): the whole
   job at --k undithered and with `--dither floyd-steinberg`, each as a command (start-up included) on the
   embedded cluster, with the peak memory of its process tree; --gigapixel-runs pairs, the two jobs alternating (a
   noisy machine slows both alike); the median of the pairs' time ratios (target <= 1.5) and the largest peak
   (target <= 4 GiB).
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


CLIPS = {  # name: (share of the photo's width panned across, zoom at the end), over 48 frames (2 s at 24 fps)
    "pan": (0.33, 1.25),
    "sweep": (1.0, 2.0),  # the whole photo, and twice as close: a hard case for one palette
}


def clip(photo, pan, zoom, count=48, height=240, width=320):
    """Frames ``(height, width, 3)`` of a camera panning left to right across ``pan`` of ``photo``'s width while
    zooming in from the window that shows the photo's height to ``zoom`` times closer."""
    rows, cols = photo.shape[:2]
    frames = []
    for number in range(count):
        t = number / (count - 1)
        crop_h = int(rows / (1 + (zoom - 1) * t))
        crop_w = min(cols, int(crop_h * width / height))
        centre = cols * (0.5 - pan / 2 + pan * t)
        left = int(min(max(centre - crop_w / 2, 0), cols - crop_w))
        top = (rows - crop_h) // 2
        window = Image.fromarray(photo[top:top + crop_h, left:left + crop_w])
        frames.append(np.asarray(window.resize((width, height), Image.Resampling.BILINEAR)))
    return frames


def frame_psnr(frame, palette, labels):
    mse = ((frame.astype(np.float64) - palette[labels].astype(np.float64)) ** 2).mean()
    return 10 * np.log10(255.0 ** 2 / mse)


def shared_palette(k):
    from sklearn.datasets import load_sample_image

    from mixlib import quantise
    from mixlib.image.quantise import quantise_frames

    print(f"\nvideo clips of 48 frames (240x320), k={k}: mean PSNR over frames (dB)")
    print(f"  {'photo, clip':20s} {'one palette':>12s} {'per frame':>10s} {'difference':>11s}")
    gaps = {}
    for name in ("china.jpg", "flower.jpg"):
        for kind, (pan, zoom) in CLIPS.items():
            frames = clip(load_sample_image(name), pan, zoom)
            shared = quantise_frames(frames, k)
            one = np.mean([frame_psnr(f, shared.palette, labels) for f, labels in zip(frames, shared.labels)])
            each = np.mean([quantise(f, k).psnr for f in frames])
            gaps.setdefault(kind, []).append(each - one)
            print(f"  {name + ', ' + kind:20s} {one:12.2f} {each:10.2f} {one - each:+11.2f}")
    for kind, shortfalls in gaps.items():
        print(f"  {kind}: largest shortfall of the shared palette {max(shortfalls):.2f} dB (target <= 0.3: "
              f"{'met' if max(shortfalls) <= 0.3 else 'missed'})")


def gigapixel(workdir, k, side, runs):
    path = workdir / f"gigapixel-{side}.zarr"
    if not path.exists():
        make_gigapixel(path, side)
    print(f"\ngigapixel Zarr {side}x{side} ({side * side / 1e9:.2f} gigapixels), k={k}, {runs} pairs of runs:")
    ratios, peaks = [], []
    for _ in range(runs):
        seconds = {}
        for method in ("none", "floyd-steinberg"):
            out = workdir / f"gigapixel-dither-{method}.zarr"
            seconds[method], peak, report = run_job([path, "--k", k, "--out", out, "--dither", method])
            peaks.append(peak)
            print(f"  --dither {method:16s} {seconds[method]:7.1f} s  peak {peak / 2 ** 30:.2f} GiB  PSNR "
                  f"{report['psnr_db']:.2f} dB  phases {report['seconds']}")
        ratios.append(seconds["floyd-steinberg"] / seconds["none"])
        print(f"  floyd-steinberg / none: {ratios[-1]:.2f}")
    ratio, peak = float(np.median(ratios)), max(peaks) / 2 ** 30
    print(f"  median floyd-steinberg / none: {ratio:.2f} (target <= 1.5: {'met' if ratio <= 1.5 else 'missed'}); "
          f"largest peak {peak:.2f} GiB (target <= 4: {'met' if peak <= 4 else 'missed'})")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "mixlib-bench")
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--clip-k", type=int, default=64)
    parser.add_argument("--skip-clip", action="store_true")
    parser.add_argument("--gigapixel-side", type=int, default=32768)
    parser.add_argument("--gigapixel-runs", type=int, default=3)
    parser.add_argument("--skip-gigapixel", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    if not args.skip_clip:
        shared_palette(args.clip_k)
    if not args.skip_quality:
        with tempfile.TemporaryDirectory() as folder:
            quality(args.k, Path(folder))
    if not args.skip_gigapixel:
        gigapixel(args.workdir, args.k, args.gigapixel_side, args.gigapixel_runs)


if __name__ == "__main__":
    main()
