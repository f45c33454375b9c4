"""Progress of a job's long phases on stderr: a bar on a terminal, plain lines at a bounded rate otherwise.

The counts come from the scheduler (distributed's progress plugin, as ``distributed.progress`` uses): every task
of the phase's graph, finished or still to run. On a terminal a bar is redrawn in place; when stderr is not a
terminal (cron, a workflow tool), a log line is written every ``line_seconds`` seconds at most, and a last one at the
end of a phase that printed any: phases shorter than ``line_seconds`` stay quiet.
"""

import logging
import sys
import threading
import time

log = logging.getLogger("mixlib")

BAR_INTERVAL = 0.2  # seconds between the scheduler's progress updates (mixlib.core.phasebar)
GRACE_SECONDS = 2.0  # phases shorter than this show no progress


def watch(futures, phase, line_seconds):
    """Draw a :class:`~mixlib.core.phasebar.PhaseBar` for ``futures`` from a background thread; returns the thread
    (a daemon).

    A failure of the progress display never fails the job: it is logged at debug level.
    """
    def draw():
        try:
            from .phasebar import PhaseBar

            PhaseBar(futures, phase, line_seconds)
        except Exception as e:  # the display is a convenience; the phase itself reports its own errors
            log.debug("progress display for %s stopped: %s", phase, e)

    thread = threading.Thread(target=draw, name=f"progress-{phase}", daemon=True)
    thread.start()
    return thread


def computed(client, collections, phase, line_seconds, optimize_graph=True):
    """Compute dask collections on ``client`` while showing the phase's progress; return their results (a list).

    A phase that ends within ``min(line_seconds, GRACE_SECONDS)`` shows nothing (no bar flickers by, and no
    progress stream is opened for it).

    Parameters
    ----------
    collections : list of dask collections
    phase : str
    line_seconds : float, least time between two plain progress lines (when stderr is not a terminal); 0 shows
        no progress at all
    optimize_graph : bool, False for collections of different kinds that share tasks: Dask optimises an array's
        graph and a Delayed's apart, and a shared task fused into one is computed again for the other
    """
    from distributed import wait

    futures = client.compute(collections, optimize_graph=optimize_graph)
    if not line_seconds:
        return client.gather(futures)
    try:
        wait(futures, timeout=min(line_seconds, GRACE_SECONDS))
        return client.gather(futures)
    except TimeoutError:
        pass
    thread = watch(futures, phase, line_seconds)
    results = client.gather(futures)
    thread.join(timeout=10)
    # The scheduler's side of the progress stream notices the closed stream at its next update: let it, so that
    # a cluster closed right after this phase does not interrupt it (which distributed logs as an error).
    time.sleep(2 * BAR_INTERVAL)
    return results


class IterationProgress:
    """Progress of an iterative fit on stderr, drawn by the loop that owns it: ``progress(iteration, **values)``
    after each iteration, or ``progress(step, stage=NAME, total=N, **values)`` for the steps of another stage (the
    centres of an initialisation). A line redrawn in place on a terminal; otherwise a log line at most every
    ``line_seconds``, the first after ``line_seconds`` (a shorter fit stays quiet, as the other phases do);
    nothing on a terminal either for a fit shorter than ``min(line_seconds, GRACE_SECONDS)``.

    Parameters
    ----------
    phase : str, names the fit ('k-means', 'EM')
    total : int, iterations at most
    line_seconds : float, least time between two plain lines; 0 shows nothing
    stream : file, stderr by default
    clock : callable, seconds (a test's own clock)
    """

    def __init__(self, phase, total, line_seconds, stream=None, clock=time.monotonic):
        self.phase, self.total, self.line_seconds = phase, total, line_seconds
        self.stream = stream or sys.stderr
        self.on_terminal = self.stream.isatty()
        self.clock = clock
        self.started = clock()
        self._last_line = 0.0  # elapsed seconds at the last plain line
        self._drawn = False

    def __call__(self, step, stage=None, total=None, **values):
        elapsed = self.clock() - self.started
        if not self.line_seconds or elapsed < min(self.line_seconds, GRACE_SECONDS):
            return
        where = f"iteration {step} of at most {self.total}" if stage is None else f"{stage} {step} of {total}"
        shown = "".join(f", {name} {value:.4g}" for name, value in values.items())
        if self.on_terminal:
            self.stream.write(f"\r{self.phase}: {where}{shown}, {elapsed:5.1f} s ")
            self.stream.flush()
            self._drawn = True
        elif elapsed - self._last_line >= self.line_seconds:
            self._last_line = elapsed
            log.info("%s: %s%s, after %.0f s", self.phase, where, shown, elapsed)

    def close(self):
        """End the line drawn on a terminal."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
