"""Batch compression (mixlib.image.batch and jobs.compress with many inputs): inputs expanded from folders, globs
and lists; every image written as a single-image run writes it; bad inputs recorded while the others are written
(exit status 4); existing outputs refused, replaced or kept (--resume, also after SIGKILL); images too large for a
task take the chunked path."""

import json
import signal
import subprocess
import time

import numpy as np
import pytest
import zarr
from conftest import REPO, cli_command, downscale, save_png
from PIL import Image
from test_image_compress_job import assert_usage_error
from test_image_inputs import gradient16, write_png16

from mixlib.image.batch import expand_inputs, is_batch, task_groups


@pytest.fixture
def corpus(tmp_path, china, flower):
    """A folder of images (RGB, grey, palette, RGBA, 16-bit grey, a Zarr array) and of bad inputs (truncated,
    text named .png, zero bytes), plus a file that is not an image: ``(folder, good relpaths, bad relpaths)``."""
    folder = tmp_path / "in"
    save_png(folder / "china.png", downscale(china))
    (folder / "trip").mkdir()
    Image.fromarray(downscale(flower, (120, 90))).save(folder / "trip" / "flower.jpg")
    Image.fromarray(downscale(china, (90, 60))).convert("L").save(folder / "trip" / "grey.png")
    Image.fromarray(downscale(flower, (80, 60))).convert("P", palette=Image.Palette.ADAPTIVE, colors=12).save(
        folder / "trip" / "palette.png")
    rgba = np.dstack([downscale(china, (64, 48)), np.where(np.arange(64) < 32, 255, 0)[None, :].repeat(48, 0)])
    save_png(folder / "rgba.png", rgba.astype(np.uint8))
    write_png16(folder / "deep.png", gradient16())
    zarr.create_array(str(folder / "tiles.zarr"), data=downscale(flower, (70, 50)), chunks=(32, 32, 3))
    whole = (folder / "china.png").read_bytes()
    (folder / "broken.png").write_bytes(whole[:len(whole) // 2])
    (folder / "text.png").write_text("not an image\n")
    (folder / "zero.png").write_bytes(b"")
    (folder / "notes.txt").write_text("left alone\n")
    good = ["china", "deep", "rgba", "tiles", "trip/flower", "trip/grey", "trip/palette"]
    return folder, good, ["broken", "text", "zero"]


def records(path):
    """The report's records by the relpath of their input (``trip/grey`` for ``.../in/trip/grey.png``)."""
    return {r["input"].split("/in/", 1)[1].rsplit(".", 1)[0]: r for r in map(json.loads, path.read_text().splitlines())}


def test_inputs_from_folders_globs_and_lists(corpus, tmp_path):
    folder, good, bad = corpus
    inputs, others = expand_inputs([str(folder)])
    assert sorted(i.relpath for i in inputs) == sorted(good + bad) and others == 1
    assert is_batch([str(folder)]) and not is_batch([str(folder / "tiles.zarr")]) and not is_batch(["sample:x"])
    globbed, _ = expand_inputs([f"{folder}/**/*.png"])
    assert sorted(i.relpath for i in globbed) == ["broken", "china", "deep", "rgba", "text", "trip/grey",
                                                  "trip/palette", "zero"]
    (tmp_path / "list.txt").write_text(f"{folder / 'trip' / 'grey.png'}\n\n# a comment\n{folder / 'rgba.png'}\n")
    listed, _ = expand_inputs([f"@{tmp_path / 'list.txt'}"])
    assert [i.relpath for i in listed] == ["grey", "rgba"]
    groups = list(task_groups([(str(folder / f"{name}.png"), "out") for name in ["china", "rgba"] * 12]))
    assert [len(g) for g in groups] == [16, 8]  # small files, 16 to a task
    spread = list(task_groups([(str(folder / "china.png"), "out")] * 6, spread=4))
    assert [len(g) for g in spread] == [1] * 6  # a small batch: a task for each worker thread


def test_a_batch_writes_what_single_runs_write_and_records_bad_inputs(run_job, capsys, corpus, tmp_path):
    folder, good, bad = corpus
    report = tmp_path / "report.jsonl"
    status = run_job(folder, "--out", tmp_path / "out" / "{relpath}-k{k}.png", "--k", 6, "--report", report)
    err = capsys.readouterr().err
    assert status == 4, err
    assert err.strip().splitlines()[-1] == f"error: 3 of 10 inputs failed; {report} lists them"
    assert "batch: 7 written, 0 skipped, 3 failed" in err
    found = records(report)
    assert sorted(found) == sorted(good + bad)
    for name in bad:
        assert found[name]["status"] == "failed" and found[name]["reason"], found[name]
    assert (found["trip/grey"]["mode"], found["trip/palette"]["mode"], found["rgba"]["mode"]) == ("L", "P", "RGBA")
    for name in good:
        record = found[name]
        assert record["status"] == "written" and record["k"] <= 6 and record["seconds"] > 0, record
        for key in ("width", "height", "mode", "distinct_colours", "iterations", "psnr_db", "bytes_in", "bytes_out"):
            assert key in record, (key, record)
        single = tmp_path / "single" / f"{name.replace('/', '-')}.png"
        source = next(folder.glob(f"{name}.*"))
        assert run_job(source, "--out", single, "--k", 6) == 0, capsys.readouterr().err
        assert (tmp_path / "out" / f"{name}-k6.png").read_bytes() == single.read_bytes(), name
    assert not (tmp_path / "out" / "broken-k6.png").exists()


def test_existing_and_clashing_outputs_and_batch_only_options(run_job, capsys, corpus, tmp_path):
    folder, _, _ = corpus
    out = tmp_path / "out" / "{relpath}.png"
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "china.png").write_bytes(b"old")
    for argv, words in (([folder, "--out", out], ["exists", "--resume"]),
                        ([folder / "trip", folder / "rgba.png", "--out", tmp_path / "{stem}.png", "--compare",
                          tmp_path / "c.png"], ["--compare"]),
                        ([folder, "--out", tmp_path / "x" / "{relpath}.png", "--k", 300], ["PNG palette"])):
        line = assert_usage_error(run_job(*argv), capsys.readouterr().err)
        for word in words:
            assert word in line
    clash = tmp_path / "clash"
    (clash / "a").mkdir(parents=True)
    (clash / "b").mkdir()
    for sub in ("a", "b"):
        save_png(clash / sub / "same.png", np.zeros((4, 4, 3), np.uint8))
    line = assert_usage_error(run_job(clash, "--out", tmp_path / "flat" / "{stem}.png"), capsys.readouterr().err)
    assert "would both write" in line and "{relpath}" in line
    assert (tmp_path / "out" / "china.png").read_bytes() == b"old"


def test_an_animation_in_a_batch_keeps_its_frames(run_job, capsys, corpus, tmp_path):
    folder, _, _ = corpus
    frames = [Image.fromarray(np.full((20, 30, 3), v, np.uint8)) for v in (10, 120, 240)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    report = tmp_path / "r.jsonl"
    assert run_job(tmp_path / "anim.gif", folder / "rgba.png", "--out", tmp_path / "o" / "{stem}.png",
                   "--report", report, "--k", 4) == 0
    assert {r["frames"] for r in map(json.loads, report.read_text().splitlines())} == {1, 3}
    with Image.open(tmp_path / "o" / "anim.png") as written:
        assert written.n_frames == 3


def test_fail_fast_stops_at_the_first_failure(run_job, capsys, corpus, tmp_path):
    folder, _, _ = corpus
    report = tmp_path / "r.jsonl"
    assert run_job(folder / "zero.png", folder / "china.png", "--out", tmp_path / "o" / "{stem}.png", "--fail-fast",
                   "--report", report, "--k", 4) == 4
    assert [r["status"] for r in map(json.loads, report.read_text().splitlines())][0] == "failed"


def test_an_image_too_large_for_a_task_takes_the_chunked_path(run_job, capsys, corpus, tmp_path):
    folder, _, _ = corpus
    batch = tmp_path / "batch"
    assert run_job(folder / "china.png", folder / "rgba.png", "--out", batch / "{stem}.png", "--k", 5,
                   "--task-pixels", 5000, "--report", tmp_path / "r.jsonl") == 0, capsys.readouterr().err
    assert run_job(folder / "china.png", "--out", tmp_path / "single.png", "--k", 5) == 0
    assert (batch / "china.png").read_bytes() == (tmp_path / "single.png").read_bytes()
    assert {r["status"] for r in map(json.loads, (tmp_path / "r.jsonl").read_text().splitlines())} == {"written"}


def test_a_batch_killed_with_sigkill_resumes_to_the_same_bytes(tmp_path, china):
    """Killed when some outputs are written: --resume keeps them (complete by construction), compresses the rest,
    and ends with the bytes of an uninterrupted run; its report lists every input once."""
    folder = tmp_path / "in"
    for i in range(40):
        save_png(folder / f"p{i:02d}.png", np.roll(downscale(china, (320, 224)), 7 * i, axis=1))
    (tmp_path / "empty.toml").write_text("")

    def command(out, *extra):
        return cli_command(folder, "--out", out / "{relpath}.png", "--k", 24, "--config", tmp_path / "empty.toml",
                           "--dashboard-address", "127.0.0.1:0", "--workers", 1, *extra)

    whole, env = command(tmp_path / "whole")
    assert subprocess.run(whole, env=env, cwd=REPO, capture_output=True, timeout=300).returncode == 0
    killed, env = command(tmp_path / "resumed", "--report", tmp_path / "killed.jsonl")
    job = subprocess.Popen(killed, env=env, cwd=REPO, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while job.poll() is None and time.monotonic() < deadline and len(list((tmp_path / "resumed").glob("*.png"))) < 4:
        time.sleep(0.01)
    job.send_signal(signal.SIGKILL)
    job.wait()
    written = len(list((tmp_path / "resumed").glob("*.png")))
    assert job.returncode == -signal.SIGKILL and 4 <= written < 40, written
    resumed, env = command(tmp_path / "resumed", "--resume", "--report", tmp_path / "resumed.jsonl")
    done = subprocess.run(resumed, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for path in sorted((tmp_path / "whole").glob("*.png")):
        assert (tmp_path / "resumed" / path.name).read_bytes() == path.read_bytes(), path.name
    statuses = [r["status"] for r in map(json.loads, (tmp_path / "resumed.jsonl").read_text().splitlines())]
    assert len(statuses) == 40 and statuses.count("skipped") == written and statuses.count("written") == 40 - written
