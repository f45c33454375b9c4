"""Quality controls of jobs.compress: --target-psnr (the fewest colours reaching a PSNR), --min-psnr and
--skip-if-larger (images skipped, not written). The PSNR is checked by brute force over the pixels of the written
output, the fewest colours by fitting one colour fewer."""

import json

import numpy as np
import pytest
from conftest import read_png, save_png

from mixlib import quantise


def brute_psnr(original, compressed):
    """PSNR in dB of two ``(H, W, C)`` uint8 images, pixel by pixel."""
    mse = np.mean((original.astype(np.float64) - compressed.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / mse) if mse > 0 else np.inf


@pytest.mark.parametrize("target", [24.0, 30.0, 34.0])
def test_target_psnr_is_reached_by_the_fewest_colours(small_china, target):
    result = quantise(small_china, 64, target_psnr=target)
    k = len(result.palette)
    assert brute_psnr(small_china, result.pixels) == pytest.approx(result.psnr, abs=1e-9)
    assert result.psnr >= target
    assert brute_psnr(small_china, quantise(small_china, k - 1).pixels) < target  # one colour fewer does not
    assert dict(result.tried)[k] == pytest.approx(result.psnr)


def test_target_out_of_reach_keeps_k_colours(small_china):
    result = quantise(small_china, 8, target_psnr=60.0)
    assert len(result.palette) == 8 and result.psnr < 60.0 and result.tried == [(8, result.psnr)]


def test_job_target_psnr_report_and_output(run_job, capsys, tmp_path, small_china_png, small_china):
    out, report = tmp_path / "t.png", tmp_path / "t.json"
    assert run_job(small_china_png, "--out", out, "--k", "64", "--target-psnr", "30", "--report", report) == 0, \
        capsys.readouterr().err
    written = json.loads(report.read_text())
    pixels = read_png(out)[3]
    assert written["status"] == "written" and written["target_psnr_db"] == 30.0
    assert written["k_effective"] == len(quantise(small_china, 64, target_psnr=30.0).palette)
    assert written["psnr_db"] == pytest.approx(brute_psnr(small_china, pixels), abs=1e-6)
    assert written["psnr_db"] >= 30.0 and written["k_tried"][0]["k"] == 64


def test_job_min_psnr_skips_without_writing(run_job, capsys, tmp_path, small_china_png):
    out, report = tmp_path / "m.png", tmp_path / "m.json"
    assert run_job(small_china_png, "--out", out, "--k", "4", "--min-psnr", "40", "--report", report,
                   "--compare", tmp_path / "c.png") == 0
    assert "skipped" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "c.png").exists()
    written = json.loads(report.read_text())
    assert written["status"] == "skipped" and "below --min-psnr 40" in written["reason"]
    assert written["output_bytes"] is None and written["psnr_db"] < 40


def test_job_skip_if_larger(run_job, tmp_path, small_china):
    """A bilevel PNG (1 bit a pixel, no palette chunk) of random bits: our 2-colour palette PNG is a few bytes larger
    (its palette), so it is skipped; the photo's 4-colour output is far smaller than its RGB original."""
    from PIL import Image

    bits = tmp_path / "bits.png"
    Image.fromarray(np.random.default_rng(0).random((64, 64)) > 0.5).save(bits)
    out, report = tmp_path / "s.png", tmp_path / "s.json"
    assert run_job(bits, "--out", out, "--k", "4", "--skip-if-larger", "--report", report) == 0
    written = json.loads(report.read_text())
    assert written["status"] == "skipped" and "larger than the input's" in written["reason"] and not out.exists()
    assert run_job(bits, "--out", out, "--k", "4") == 0 and out.stat().st_size > bits.stat().st_size
    big = tmp_path / "big.png"
    save_png(big, small_china)
    assert run_job(big, "--out", tmp_path / "b.png", "--k", "4", "--skip-if-larger") == 0
    assert (tmp_path / "b.png").exists()


def test_batch_records_skipped_images(run_job, capsys, tmp_path, small_china):
    folder = tmp_path / "in"
    folder.mkdir()
    save_png(folder / "photo.png", small_china)
    save_png(folder / "flat.png", np.full((32, 32, 3), 128, np.uint8))
    report = tmp_path / "r.jsonl"
    assert run_job(folder, "--out", tmp_path / "out" / "{relpath}.png", "--k", "4", "--min-psnr", "35",
                   "--report", report) == 0, capsys.readouterr().err
    records = {json.loads(line)["input"].rsplit("/", 1)[-1]: json.loads(line)
               for line in report.read_text().splitlines()}
    assert records["photo.png"]["status"] == "skipped" and not (tmp_path / "out" / "photo.png").exists()
    assert records["flat.png"]["status"] == "written" and (tmp_path / "out" / "flat.png").exists()


@pytest.mark.parametrize("flags, message", [(("--target-psnr", "120"), "target-psnr"),
                                            (("--min-psnr", "-1"), "min-psnr")])
def test_bad_quality_values_exit_2(run_job, capsys, tmp_path, small_china_png, flags, message):
    assert run_job(small_china_png, "--out", tmp_path / "x.png", *flags) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and not (tmp_path / "x.png").exists()
