"""Palette PNG sizes: pngquant against this project's PNG writer, old and new, at the same palette size.

    python benchmarks/png_size.py [--workdir DIR] [--k 64] [--repeats 3] [--skip-job]

Needs the benchmark-only packages `pngquant-cli` (the `pngquant` command) and `scikit-image` (photos).

The corpus is 30 real photos from installed packages (scikit-image's `data` photos, scikit-learn's sample photos),
with crops, rescalings, a rotation, grey and RGBA versions. Each is quantised to k colours by pngquant
(`xargs -P2 pngquant --nofs K`) and, unless `--skip-job`, by `python -m jobs.compress --k K`, one image after
another. Then the labels and palette of each output are encoded again, in this process:
  * old: this project's previous writer (Pillow, zlib's RLE strategy, optimize=False);
  * new: `mixlib.image.writers.encode_png`.
Two comparisons: on pngquant's own pixels (the encoders alone), and on the job's pixels (what a user gets). It
prints the total bytes of each, the ratios, and the encode times (median over images of the median of
`--repeats` runs; and the sum).
"""

import argparse
import io
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mixlib.image.writers import encode_png  # noqa: E402


def photos():
    """The colour photos: name -> (H, W, 3) uint8."""
    import skimage.data as data
    from sklearn.datasets import load_sample_image

    names = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "colorwheel")
    rgb = {name: getattr(data, name)() for name in names}
    rgb["retina"] = resized(data.retina(), (768, 768))
    rgb["motorcycle"] = data.stereo_motorcycle()[0]
    rgb["china"] = load_sample_image("china.jpg")
    rgb["flower"] = load_sample_image("flower.jpg")
    return rgb


def resized(pixels, size, resample=Image.LANCZOS):
    """``pixels`` resized to ``size`` (width, height)."""
    return np.asarray(Image.fromarray(pixels).resize(size, resample))


def with_alpha(pixels, alpha):
    """RGB pixels with an alpha channel."""
    return np.dstack([pixels, alpha.astype(np.uint8)])


def variants(rgb):
    """Crops, rescalings, a rotation: name -> pixels."""
    return {
        "china-crop": rgb["china"][100:400, 200:600],
        "flower-crop": rgb["flower"][50:350, 100:500],
        "astronaut-crop": rgb["astronaut"][:256, 128:384],
        "china-half": resized(rgb["china"], (320, 214)),
        "coffee-up": resized(rgb["coffee"], (900, 600), Image.BICUBIC),
        "rocket-rot": np.rot90(rgb["rocket"]).copy(),
        "motorcycle-half": resized(rgb["motorcycle"], (480, 376)),
    }


def greys(rgb):
    """Grey photos: name -> (H, W) uint8."""
    import skimage.data as data

    out = {f"grey-{name}": getattr(data, name)() for name in ("camera", "coins", "moon", "brick", "grass", "cell",
                                                               "clock")}
    out["grey-chelsea"] = np.asarray(Image.fromarray(rgb["chelsea"]).convert("L"))
    return out


def rgbas(rgb):
    """RGBA images: a logo, an alpha ramp, a disc mask, a soft vignette."""
    import skimage.data as data

    astronaut, china, coffee = rgb["astronaut"], rgb["china"], rgb["coffee"]
    ramp = np.tile(np.linspace(0, 255, astronaut.shape[1]), (astronaut.shape[0], 1))
    h, w = china.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    disc = ((yy - h / 2) / (h / 2)) ** 2 + ((xx - w / 2) / (w / 2)) ** 2 <= 1
    h, w = coffee.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    vignette = np.clip(255 - np.hypot(yy - h / 2, xx - w / 2) * 255 / (0.6 * h), 0, 255)
    return {"rgba-logo": data.logo(), "rgba-astronaut-ramp": with_alpha(astronaut, ramp),
            "rgba-china-disc": with_alpha(china, disc * 255), "rgba-coffee-vignette": with_alpha(coffee, vignette)}


def build_corpus(folder):
    """Write the corpus as PNG files in ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = photos()
    images = {**rgb, **variants(rgb), **greys(rgb), **rgbas(rgb)}
    for name, pixels in images.items():
        Image.fromarray(pixels).save(folder / f"{name}.png")
    return sorted(folder / f"{name}.png" for name in images)


def run_pngquant(paths, out, k):
    """pngquant on every path, two at a time; returns the wall time."""
    out.mkdir(parents=True, exist_ok=True)
    command = f'pngquant --nofs {k} --force --output "{out}/$(basename "$0")" "$0"'
    started = time.perf_counter()
    subprocess.run(["xargs", "-P2", "-n1", "sh", "-c", command], input="\n".join(map(str, paths)), text=True,
                   check=True)
    return time.perf_counter() - started


def run_job(paths, out, k):
    """``python -m jobs.compress`` on every path, one after another; returns the wall time."""
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for path in paths:
        subprocess.run([sys.executable, "-m", "jobs.compress", str(path), "--k", str(k), "--out",
                        str(out / path.name), "--overwrite", "--dashboard-address", "127.0.0.1:0",
                        "--log-level", "warning"], check=True, cwd=ROOT)
    return time.perf_counter() - started


def labels_and_palette(path):
    """The indices ``(H, W)`` and the palette ``(k, 3|4)`` of a palette PNG (alpha from its tRNS chunk)."""
    image = Image.open(path)
    labels = np.asarray(image)
    colours = np.array(image.getpalette(rawmode="RGB"), dtype=np.uint8).reshape(-1, 3)
    transparency = image.info.get("transparency")
    if transparency is None:
        return labels, colours
    alpha = np.full(len(colours), 255, dtype=np.uint8)
    if isinstance(transparency, bytes):
        alpha[:len(transparency)] = np.frombuffer(transparency, dtype=np.uint8)
    else:
        alpha[transparency] = 0
    return labels, np.column_stack([colours, alpha])


def old_png(labels, palette):
    """The previous writer: Pillow, zlib's RLE strategy, optimize=False."""
    image = Image.fromarray(labels)
    image.putpalette(palette.tobytes(), rawmode="RGBA" if palette.shape[1] == 4 else "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_type=3)
    return buffer.getvalue()


def timed(encode, labels, palette, repeats):
    """The encoded bytes and the median time of ``repeats`` runs."""
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        data = encode(labels, palette)
        seconds.append(time.perf_counter() - started)
    return data, statistics.median(seconds)


def same_pixels(data, labels, palette):
    """Whether a PNG decodes to exactly ``palette[labels]`` (RGBA)."""
    decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))
    expected = palette[labels]
    if expected.shape[2] == 3:
        expected = np.dstack([expected, np.full(labels.shape, 255, dtype=np.uint8)])
    return np.array_equal(decoded, expected)


def measure(folder, repeats):
    """Bytes and encode times of the old and new writers on every palette PNG in ``folder``."""
    rows = []
    for path in sorted(folder.glob("*.png")):
        labels, palette = labels_and_palette(path)
        old, old_seconds = timed(old_png, labels, palette, repeats)
        new, new_seconds = timed(encode_png, labels, palette, repeats)
        assert same_pixels(new, labels, palette), path
        rows.append({"name": path.name, "file": path.stat().st_size, "old": len(old), "new": len(new),
                     "old_s": old_seconds, "new_s": new_seconds, "pixels": labels.size})
    return rows


def report(title, rows, pngquant_bytes):
    """Print one comparison: per-image bytes, totals, ratios and encode times."""
    print(f"\n== {title} ({len(rows)} images, {sum(r['pixels'] for r in rows) / 1e6:.1f} MP)")
    print(f"{'image':28s} {'pngquant':>9s} {'old':>9s} {'new':>9s} {'new/pq':>7s}")
    for row in rows:
        pq = pngquant_bytes[row["name"]]
        print(f"{row['name']:28s} {pq:9d} {row['old']:9d} {row['new']:9d} {row['new'] / pq:7.3f}")
    pq_total = sum(pngquant_bytes[r["name"]] for r in rows)
    old_total, new_total = sum(r["old"] for r in rows), sum(r["new"] for r in rows)
    print(f"total bytes: pngquant {pq_total}, old {old_total}, new {new_total}")
    print(f"ratios: old/pngquant {old_total / pq_total:.4f}, new/pngquant {new_total / pq_total:.4f}, "
          f"new/old {new_total / old_total:.4f}")
    for key, label in (("old_s", "old"), ("new_s", "new")):
        times = [r[key] for r in rows]
        print(f"encode time {label}: median {1e3 * statistics.median(times):.1f} ms per image, "
              f"sum {sum(times):.2f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the corpus and outputs here")
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-job", action="store_true", help="only pngquant's pixels (no jobs.compress runs)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = args.workdir or Path(scratch)
        paths = build_corpus(work / "corpus")
        pq_seconds = run_pngquant(paths, work / "pngquant", args.k)
        print(f"corpus: {len(paths)} images in {work / 'corpus'}; pngquant --nofs {args.k} (2 at a time): "
              f"{pq_seconds:.2f} s")
        pngquant_bytes = {p.name: p.stat().st_size for p in (work / "pngquant").glob("*.png")}
        report("pngquant's pixels, encoded again (encoder against encoder)",
               measure(work / "pngquant", args.repeats), pngquant_bytes)
        if not args.skip_job:
            job_seconds = run_job(paths, work / "job", args.k)
            print(f"\njobs.compress --k {args.k}, one image after another: {job_seconds:.1f} s")
            report("the job's pixels (what a user gets)", measure(work / "job", args.repeats), pngquant_bytes)


if __name__ == "__main__":
    main()
