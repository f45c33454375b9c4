"""Progress of long phases: a bar on a terminal, bounded plain lines otherwise; counts from the scheduler."""

import io
import logging
import time

import dask.array as da
import numpy as np

from mixlib.core.phasebar import PhaseBar
from mixlib.core.progress import computed


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_bar_on_a_terminal_counts_every_task(client):
    x = da.ones((400, 400), chunks=100)  # 16 chunks
    futures = client.compute([(x + 1).sum()])
    terminal = Terminal()
    PhaseBar(futures, "demo-phase", line_seconds=30, stream=terminal)
    assert client.gather(futures) == [320000]
    drawn = terminal.getvalue()
    assert drawn.startswith("\rdemo-phase [") and drawn.endswith("\n")
    last = drawn.rstrip("\n").split("\r")[-1]
    done, total = last.split("] ")[1].split(" tasks")[0].split("/")
    assert done == total and int(total) >= 16  # every chunk task, not only the result
    assert "#" * 30 in last


def test_plain_lines_when_not_a_terminal_at_a_bounded_rate(client, caplog):
    x = da.random.default_rng(0).random((2000, 2000), chunks=250)
    for line_seconds in (3600, 0.2):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="mixlib"):
            started = time.perf_counter()
            result, = computed(client, [(x @ x.T).sum()], "demo-phase", line_seconds=line_seconds)
            seconds = time.perf_counter() - started
        assert np.isfinite(result)
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("demo-phase:")]
        if line_seconds == 3600:
            assert lines == []  # a phase shorter than the interval stays quiet
        else:
            assert 2 <= len(lines) <= seconds / line_seconds + 2, (lines, seconds)
            assert "tasks done" in lines[0] and lines[-1].startswith("demo-phase: finished, ")


def test_no_progress_output_when_disabled(client, caplog):
    with caplog.at_level(logging.INFO, logger="mixlib"):
        assert computed(client, [da.ones(10, chunks=5).sum()], "quiet-phase", line_seconds=0) == [10]
    assert not [r for r in caplog.records if "quiet-phase" in r.getMessage()]


def test_fit_progress_on_a_terminal_and_in_lines(caplog):
    """A long fit draws its iterations: one line redrawn in place on a terminal, bounded log lines otherwise,
    nothing for a fit shorter than the grace time."""
    import itertools

    import mixlib.core.progress as progress

    ticks = itertools.count()  # one second per reading of the clock

    def clock():
        return float(next(ticks))

    terminal = Terminal()
    with progress.IterationProgress("k-means", 300, line_seconds=30, stream=terminal, clock=clock) as drawn:
        for iteration in range(1, 6):
            drawn(iteration, inertia=1000.0 / iteration, shift=0.5)
    text = terminal.getvalue()
    assert text.endswith("\n") and text.count("\n") == 1
    assert text.split("\r")[-1].startswith("k-means: iteration 5 of at most 300, inertia 200, shift 0.5,")
    assert "iteration 1 " not in text  # the first second is within the grace time

    with caplog.at_level(logging.INFO, logger="mixlib"):
        ticks = itertools.count()
        plain = progress.IterationProgress("EM", 100, line_seconds=4, stream=io.StringIO(), clock=clock)
        for iteration in range(1, 21):
            plain(iteration, mean_loglik=-13.0)
        plain.close()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("EM: ")]
    assert 4 <= len(lines) <= 5, lines  # 20 s of iterations, a line at most every 4 s, the first after 4 s
    assert lines[0].startswith("EM: iteration 4 of at most 100, mean_loglik -13,")

    with caplog.at_level(logging.INFO, logger="mixlib"):
        caplog.clear()
        ticks = itertools.count()
        init = progress.IterationProgress("k-means", 300, line_seconds=3, stream=io.StringIO(), clock=clock)
        for centre in range(1, 9):
            init(centre, stage="k-means++ centre", total=8)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("k-means: ")]
    assert lines and lines[0].startswith("k-means: k-means++ centre 3 of 8, after 3 s"), lines


def test_a_long_fit_shows_its_iterations(run_job, capsys, tmp_path, china):
    """The compress job passes its fit's progress on: with progress lines every 0.01 s, a k=64 fit of a photo's
    96,615 colours (in the job's process) logs some."""
    from conftest import save_png

    photo = save_png(tmp_path / "china.png", china)
    assert run_job(photo, "--out", tmp_path / "o.png", "--k", "64", "--progress-seconds", "0.01") == 0
    err = capsys.readouterr().err
    assert "k-means: iteration " in err and "inertia" in err, err
