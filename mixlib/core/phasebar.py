"""The progress bar of a phase of tasks, fed by the scheduler (distributed's progress plugin, as
``distributed.progress`` uses); imported only by a job that runs on a cluster (:func:`mixlib.core.progress.watch`),
so that a job without one does not load distributed."""

import logging
import sys

from distributed.diagnostics.progressbar import TextProgressBar

from .progress import BAR_INTERVAL

log = logging.getLogger("mixlib")

BAR_WIDTH = 30


class PhaseBar(TextProgressBar):
    """distributed's text progress bar, drawn on stderr (a bar on a terminal, rate-limited log lines otherwise).

    Parameters
    ----------
    futures : list of distributed.Future, the phase's results; every task they depend on is counted
    phase : str, names the phase in the output
    line_seconds : float, least time between two plain lines
    stream : file, stderr by default
    """

    def __init__(self, futures, phase, line_seconds, stream=None, **kwargs):
        self.phase, self.line_seconds = phase, line_seconds
        self.stream = stream or sys.stderr
        self.on_terminal = self.stream.isatty()
        self._last_line = None
        super().__init__(futures, interval=BAR_INTERVAL, **kwargs)

    def _draw_bar(self, remaining, all, **kwargs):
        done = all - remaining
        if self.on_terminal:
            filled = int(BAR_WIDTH * done / all) if all else BAR_WIDTH
            self.stream.write(f"\r{self.phase} [{'#' * filled:<{BAR_WIDTH}}] {done}/{all} tasks "
                              f"{self.elapsed:5.1f} s")
            self.stream.flush()
        elif self.elapsed - (self._last_line or 0.0) >= self.line_seconds:
            self._last_line = self.elapsed
            log.info("%s: %d of %d tasks done (%.0f%%) after %.0f s", self.phase, done, all,
                     100.0 * done / all if all else 100.0, self.elapsed)

    def _draw_stop(self, remaining, all, status, **kwargs):
        if self.on_terminal:
            self.stream.write("\n")
            self.stream.flush()
        elif self._last_line is not None:  # a phase shorter than line_seconds prints nothing
            log.info("%s: %s, %d of %d tasks after %.0f s", self.phase, status, all - remaining, all, self.elapsed)
