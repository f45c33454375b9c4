"""Progress of long phases: a bar on a terminal, bounded plain lines otherwise; counts from the scheduler."""

import io
import logging
import time

import dask.array as da
import numpy as np

from mixlib.progress import PhaseBar, computed


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
