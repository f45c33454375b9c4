"""Animations and multi-page files: every frame compressed with one palette, fitted to the merged colour histogram
of the frames (so it equals the palette of the frames stacked into one image), written back as an APNG or a GIF
with the input's durations and loop count, or as a file per frame (``{frame}`` in --out)."""

import json

import numpy as np
import pytest
from conftest import read_png

from mixlib import quantise
from mixlib.image import dither

DURATIONS = [80, 90, 100, 110, 120]


def pan(photo, count=5, height=60, width=80):
    """Frames of a camera pan over ``photo``: ``count`` crops moving down and right."""
    return [np.ascontiguousarray(photo[5 * i:5 * i + height, 9 * i:9 * i + width]) for i in range(count)]


def save_animation(path, frames, **options):
    from PIL import Image

    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(path, save_all=True, append_images=images[1:], **options)
    return path


def read_frames_of(path):
    """``(palettes, pixels, durations, loop)`` of every frame of an APNG or GIF, kept in palette mode when the file
    carries one palette (Pillow converts a GIF's later frames to RGB only when their palette differs)."""
    from PIL import GifImagePlugin, Image, ImageSequence

    GifImagePlugin.LOADING_STRATEGY = GifImagePlugin.LoadingStrategy.RGB_AFTER_DIFFERENT_PALETTE_ONLY
    try:
        with Image.open(path) as image:
            loop = image.info.get("loop")
            palettes, pixels, durations = [], [], []
            for frame in ImageSequence.Iterator(image):
                palettes.append(frame.getpalette() if frame.mode == "P" else None)
                pixels.append(np.asarray(frame.convert("RGB")))
                durations.append(frame.info.get("duration"))
    finally:
        GifImagePlugin.LOADING_STRATEGY = GifImagePlugin.LoadingStrategy.RGB_AFTER_FIRST
    return palettes, pixels, durations, loop


def stacked_quantised(frames, k, **options):
    """The frames quantised as one image stacked from them, split back into frames: the reference."""
    result = quantise(np.concatenate(frames, axis=0), k, **options)
    pixels = result.pixels
    return result, [pixels[i * len(frames[0]):(i + 1) * len(frames[0])] for i in range(len(frames))]


@pytest.mark.parametrize("source_suffix,out_suffix", [(".png", ".gif"), (".gif", ".png")])
def test_an_animation_keeps_its_frames_timing_and_one_palette(run_job, tmp_path, small_china, source_suffix,
                                                               out_suffix):
    frames = pan(small_china)
    source = save_animation(tmp_path / f"in{source_suffix}", frames, duration=DURATIONS, loop=3)
    decoded = read_frames_of(source)[1]  # a GIF input holds its own 256-colour frames
    out, report = tmp_path / f"out{out_suffix}", tmp_path / "report.json"
    assert run_job(source, "--k", 12, "--out", out, "--report", report) == 0
    palettes, pixels, durations, loop = read_frames_of(out)
    assert len(pixels) == len(frames) and durations == DURATIONS and loop == 3
    assert all(palette == palettes[0] for palette in palettes) and palettes[0] is not None
    expected_result, expected = stacked_quantised(decoded, 12)
    for got, want in zip(pixels, expected):
        np.testing.assert_array_equal(got, want)
    written = json.loads(report.read_text())
    assert written["frames"] == 5 and written["durations_ms"] == DURATIONS and written["loop"] == 3
    assert written["psnr_db"] == pytest.approx(expected_result.psnr, abs=1e-9)


def test_the_pages_of_a_tiff_go_to_a_file_each(run_job, tmp_path, small_china):
    """{frame} in --out: one PNG per page, numbered 0..4, each carrying the identical palette."""
    frames = pan(small_china)
    source = save_animation(tmp_path / "pages.tif", frames)
    assert run_job(source, "--k", 10, "--out", str(tmp_path / "out" / "page-{frame}.png")) == 0
    outputs = sorted((tmp_path / "out").iterdir())
    assert [p.name for p in outputs] == [f"page-{i}.png" for i in range(5)]
    _, expected = stacked_quantised(frames, 10)
    palettes = []
    for path, want in zip(outputs, expected):
        labels, palette, mode, pixels = read_png(path)
        palettes.append(palette)
        np.testing.assert_array_equal(pixels, want)
    assert all(np.array_equal(palette, palettes[0]) for palette in palettes)


def test_a_dithered_animation_dithers_each_frame_with_the_shared_palette(run_job, tmp_path, small_china):
    frames = pan(small_china)
    source = save_animation(tmp_path / "in.png", frames, duration=DURATIONS)
    out = tmp_path / "out.png"
    assert run_job(source, "--k", 8, "--out", out, "--dither", "floyd-steinberg") == 0
    palettes, pixels, _, _ = read_frames_of(out)
    palette = np.asarray(palettes[0], np.uint8).reshape(-1, 3)[:8]
    for got, frame in zip(pixels, frames):
        np.testing.assert_array_equal(got, palette[dither.dither_strip(frame, palette, 1.0)[0]])


def test_a_batch_writes_animations_and_stills(run_job, tmp_path, small_china):
    folder = tmp_path / "inputs"
    folder.mkdir()
    frames = pan(small_china)
    save_animation(folder / "moving.gif", frames, duration=DURATIONS, loop=0)
    save_animation(folder / "still.png", frames[:1])
    report = tmp_path / "reports" / "batch.jsonl"  # a folder made for it
    assert run_job(folder, "--k", 8, "--out", str(tmp_path / "out" / "{relpath}.gif"), "--report", report) == 0
    records = {json.loads(line)["input"].rsplit("/", 1)[-1]: json.loads(line)
               for line in report.read_text().splitlines()}
    assert records["moving.gif"]["status"] == records["still.png"]["status"] == "written"
    palettes, pixels, durations, loop = read_frames_of(tmp_path / "out" / "moving.gif")
    assert len(pixels) == 5 and durations == DURATIONS and loop == 0
    assert all(palette == palettes[0] for palette in palettes)
    _, expected = stacked_quantised(read_frames_of(folder / "moving.gif")[1], 8)
    for got, want in zip(pixels, expected):
        np.testing.assert_array_equal(got, want)
    assert len(read_frames_of(tmp_path / "out" / "still.gif")[1]) == 1


def test_outputs_that_cannot_hold_the_frames_exit_2(run_job, capsys, tmp_path, small_china):
    frames = pan(small_china)
    animation = save_animation(tmp_path / "in.gif", frames, duration=DURATIONS)
    assert run_job(animation, "--out", tmp_path / "out.tif") == 2
    assert "{frame}" in capsys.readouterr().err
    pages = save_animation(tmp_path / "pages.tif", [frames[0], frames[1][:40]])
    assert run_job(pages, "--out", tmp_path / "out.png") == 2
    assert "differ in size" in capsys.readouterr().err
    (tmp_path / "f-1.png").write_bytes(b"")
    assert run_job(animation, "--out", str(tmp_path / "f-{frame}.png")) == 2
    err = capsys.readouterr().err
    assert "f-1.png" in err and "--overwrite" in err and "Traceback" not in err
    assert not (tmp_path / "f-0.png").exists() and not (tmp_path / "out.tif").exists()


def test_a_gif_of_partly_transparent_pixels_exits_2_before_the_fit(run_job, capsys, tmp_path, small_china):
    from conftest import save_png

    pixels = np.dstack([small_china, np.full(small_china.shape[:2], 128, np.uint8)])
    source = save_png(tmp_path / "half.png", pixels)
    assert run_job(source, "--out", tmp_path / "out.gif") == 2
    err = capsys.readouterr().err
    assert "partly transparent" in err and "k-means" not in err and "Traceback" not in err
    assert not (tmp_path / "out.gif").exists()


def test_a_shared_palette_counts_every_frame(run_job, tmp_path, small_china):
    """--shared-palette over an animation and a still: the fit of every frame and the still as one image."""
    import json as json_module

    folder = tmp_path / "inputs"
    folder.mkdir()
    frames = pan(small_china)
    save_animation(folder / "moving.png", frames, duration=DURATIONS)
    still = np.ascontiguousarray(small_china[-60:, -80:])
    save_animation(folder / "still.png", [still])
    assert run_job(folder, "--k", 10, "--shared-palette", "--out", str(tmp_path / "out" / "{relpath}.png"),
                   "--palette-out", tmp_path / "shared.json") == 0
    shared = np.array(json_module.loads((tmp_path / "shared.json").read_text())["colours"], dtype=np.uint8)
    np.testing.assert_array_equal(shared, quantise(np.concatenate(frames + [still]), 10).palette)
    palettes, _, _, _ = read_frames_of(tmp_path / "out" / "moving.png")
    assert np.array_equal(np.asarray(palettes[0], np.uint8).reshape(-1, 3)[:len(shared)], shared)
