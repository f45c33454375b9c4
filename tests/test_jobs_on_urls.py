"""Zarr inputs, outputs, checkpoints and model stores at fsspec URLs give what local paths give.

``file://`` URLs go through fsspec's LocalFileSystem (the code path of s3:// and gs://, which this machine cannot
reach) and are seen by the session cluster's worker processes; ``memory://`` is fsspec's in-memory filesystem,
which only this process sees, so it serves what the client alone writes (model stores, ALS checkpoints).
"""

import json

import numpy as np
import pytest
import zarr
from test_recsys_recommend_job import FAST, one_error_line, synthetic, write_csv


@pytest.fixture
def zarr_image(tmp_path):
    pixels = np.random.default_rng(4).integers(0, 16, (600, 500, 3), dtype=np.uint8) * 16
    zarr.create_array(str(tmp_path / "in.zarr"), data=pixels, chunks=(128, 128, 3))
    return tmp_path / "in.zarr"


def read_compressed(location):
    group = zarr.open_group(str(location), mode="r")
    return group["labels"][...], group["palette"][...]


def test_compress_from_and_to_file_urls_equals_local_paths(run_job, capsys, tmp_path, zarr_image):
    """Workers read the input and write the labels through fsspec; the histogram checkpoint lives at a URL too."""
    assert run_job(zarr_image, "--k", 6, "--out", tmp_path / "local.zarr", "--chunk-size", 128) == 0
    url_out, url_checkpoint = (tmp_path / "url.zarr").as_uri(), (tmp_path / "checkpoint").as_uri()
    status = run_job(zarr_image.as_uri(), "--k", 6, "--out", url_out, "--chunk-size", 128, "--checkpoint-dir",
                     url_checkpoint, "--report", tmp_path / "r.json")
    assert status == 0, capsys.readouterr().err
    for a, b in zip(read_compressed(tmp_path / "local.zarr"), read_compressed(tmp_path / "url.zarr")):
        np.testing.assert_array_equal(a, b)
    report = json.loads((tmp_path / "r.json").read_text())
    files = [p for p in (tmp_path / "url.zarr").rglob("*") if p.is_file()]
    assert report["output_bytes"] == sum(p.stat().st_size for p in files) and report["input"] == zarr_image.as_uri()
    assert not (tmp_path / "checkpoint").exists()  # a finished job leaves no checkpoint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.zarr", "local.zarr", "r.json", "url.zarr"]


def test_url_outputs_are_never_overwritten_without_overwrite(run_job, capsys, tmp_path, zarr_image):
    out = (tmp_path / "o.zarr").as_uri()
    assert run_job(zarr_image.as_uri(), "--k", 3, "--out", out) == 0
    labels, _ = read_compressed(tmp_path / "o.zarr")
    status = run_job(zarr_image.as_uri(), "--k", 5, "--out", out)
    assert status == 2 and f"output {out} exists; pass --overwrite" in capsys.readouterr().err
    np.testing.assert_array_equal(read_compressed(tmp_path / "o.zarr")[0], labels)
    assert run_job(zarr_image.as_uri(), "--k", 5, "--out", out, "--overwrite") == 0
    assert len(read_compressed(tmp_path / "o.zarr")[1]) == 5


@pytest.mark.parametrize("argv, message", [
    (["IN", "--out", "s3://bucket/o.zarr"], "--out s3://bucket/o.zarr: Install s3fs to access S3"),
    (["IN", "--out", "nosuchfs://bucket/o.zarr"], "--out nosuchfs://bucket/o.zarr: Unsupported filesystem"),
    (["IN", "--out", "memory://bucket/o.png"], "only Zarr outputs are written to URLs"),
    (["memory://bucket/photo.png", "--out", "OUT"], "memory://bucket/photo.png is not an image"),
    (["memory://bucket/none.zarr", "--out", "OUT"], "input memory://bucket/none.zarr does not exist"),
], ids=["missing-package", "unknown-protocol", "png-to-url", "bad-png-from-url", "missing-input"])
def test_bad_urls_are_one_line_and_status_2(run_job, capsys, tmp_path, zarr_image, argv, message):
    from upath import UPath

    UPath("memory://bucket/photo.png").write_bytes(b"\x89PNG not really")
    argv = [str(zarr_image) if a == "IN" else str(tmp_path / "o.zarr") if a == "OUT" else a for a in argv]
    assert run_job(*argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert message in lines[-1] and one_error_line(lines), lines
    assert list(tmp_path.iterdir()) == [zarr_image]


def test_model_store_at_a_url_publishes_and_serves_what_a_local_one_does(run_recommend, capsys, tmp_path):
    """The client alone writes model stores and ALS checkpoints: a memory:// store stands for a bucket."""
    from upath import UPath

    ratings = write_csv(tmp_path / "ratings.csv", synthetic(seed=8))
    url = "memory://models/recs"
    for model_dir in (tmp_path / "local", url):
        assert run_recommend("train", "--ratings", ratings, "--model-dir", model_dir, *FAST) == 0
        out = tmp_path / f"predictions-{'url' if model_dir == url else 'local'}.csv"
        assert run_recommend("predict", "--model-dir", model_dir, "--pairs", ratings, "--out", out) == 0
    assert (tmp_path / "predictions-url.csv").read_bytes() == (tmp_path / "predictions-local.csv").read_bytes()
    assert UPath(url, "latest").read_text().strip() == "v0001"
    assert not UPath(url, "checkpoint").exists()
    assert run_recommend("train", "--ratings", ratings, "--model-dir", url, *FAST, "--guardrail-tolerance", 1) == 0
    assert UPath(url, "latest").read_text().strip() == "v0002"


def test_a_batch_reads_and_writes_at_urls_what_it_does_at_paths(run_job, capsys, tmp_path, small_china):
    """A folder and a glob named by file:// URLs (fsspec's code path of s3://): the workers read the images and
    write the outputs, the same bytes as with local paths."""
    from conftest import save_png

    for i in range(3):
        save_png(tmp_path / "photos" / "trip" / f"p{i}.png", np.roll(np.asarray(small_china), 9 * i, axis=1))
    (tmp_path / "photos" / "notes.txt").write_text("left alone\n")
    url = (tmp_path / "photos").as_uri()
    assert run_job(url, "--out", (tmp_path / "by-url").as_uri() + "/{relpath}.zarr", "--k", 5) == 0, \
        capsys.readouterr().err
    assert run_job(f"{url}/**/*.png", "--out", tmp_path / "by-glob" / "{relpath}.png", "--k", 5) == 0
    assert run_job(tmp_path / "photos", "--out", tmp_path / "by-path" / "{relpath}.png", "--k", 5) == 0
    for i in range(3):
        by_url = zarr.open_group(str(tmp_path / "by-url" / "trip" / f"p{i}.zarr"), mode="r")
        by_path = tmp_path / "by-path" / "trip" / f"p{i}.png"
        assert (tmp_path / "by-glob" / "trip" / f"p{i}.png").read_bytes() == by_path.read_bytes()
        from PIL import Image

        with Image.open(by_path) as im:
            decoded = np.asarray(im.convert("RGB"))
        np.testing.assert_array_equal(by_url["palette"][...][by_url["labels"][...]], decoded)
