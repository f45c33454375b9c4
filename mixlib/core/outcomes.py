"""Counting a job's task outcomes on the scheduler, for the end-of-job summary.

A task that its worker took down with it (SIGKILL, the nanny's memory limit), or whose result was lost with a
worker and is needed again, goes back to ``processing`` on another worker: Dask retries it without the client
seeing anything. Only the scheduler knows, so a scheduler plugin counts, for the tasks of one client:

- ``tasks``: distinct tasks that started (entered ``processing``);
- ``retried``: starts of a task after its run was interrupted (it left ``processing`` other than to ``memory`` or
  ``erred``) or its result was lost with a worker (``memory -> released`` for a worker's sake, not the client's).
  A task computed again by design (a later graph that reads the same chunks) is not a retry;
- ``failed``: tasks that ended ``erred`` while processing (an exception, or killed more often than
  ``allowed-failures``); the dependents that err with them are not counted.

Work stealing moves a task between workers without a transition, so it is not counted as a retry.
"""

import contextlib
import logging
import uuid

from distributed.diagnostics.plugin import SchedulerPlugin

log = logging.getLogger("mixlib")


class TaskOutcomes(SchedulerPlugin):
    """Scheduler plugin: the task outcomes of the graphs that one client submits.

    Parameters
    ----------
    client_id : str, ``distributed.Client.id`` of the job
    """

    def __init__(self, client_id):
        self.client_id = client_id
        self.keys = set()  # every task key the client submitted
        self.started = set()  # keys that entered processing at least once
        self.interrupted = set()  # keys whose run or result a worker took with it, until they start again
        self.retried = 0
        self.failed = 0

    def update_graph(self, scheduler, *, client, tasks, **kwargs):
        if client == self.client_id:
            self.keys.update(tasks)

    def transition(self, key, start, finish, *args, stimulus_id="", **kwargs):
        if key not in self.keys:
            return
        if finish == "processing":
            self.started.add(key)
            if key in self.interrupted:
                self.retried += 1
                self.interrupted.discard(key)
        elif start == "processing" and finish == "erred":  # not its dependents, which err with it
            self.failed += 1
        elif start == "processing" and finish != "memory":
            self.interrupted.add(key)
        elif start == "memory" and finish == "released" and "worker" in stimulus_id:
            self.interrupted.add(key)  # lost with a worker ("handle-worker-cleanup-..."), not released by a client

    def counts(self):
        """``{"tasks", "retried", "failed"}`` so far."""
        return {"tasks": len(self.started), "retried": self.retried, "failed": self.failed}


def _counts(dask_scheduler, name):
    return dask_scheduler.plugins[name].counts()


@contextlib.contextmanager
def counted_tasks(client):
    """Count the task outcomes of ``client`` inside the block; log them at its end, whether it succeeds or not.

    The scheduler must be able to import mixlib (it must anyway, to deserialise the jobs' graphs). When the
    plugin cannot be installed or read, the job goes on and the summary says so.
    """
    name = f"mixlib-task-outcomes-{uuid.uuid4().hex}"
    try:
        client.register_plugin(TaskOutcomes(client.id), name=name)
    except Exception as e:  # a scheduler that refuses plugins must not stop the job
        log.warning("task outcomes will not be counted: the scheduler refused the plugin (%s)", e)
        yield
        return
    try:
        yield
    finally:
        _log_summary(client, name)


def _log_summary(client, name):
    try:
        counts = client.run_on_scheduler(_counts, name=name)
        client.unregister_scheduler_plugin(name)
    except Exception as e:  # the scheduler may be gone: the job's own error line says why
        log.warning("task summary unavailable (%s)", e.__class__.__name__)
        return
    log.info("tasks: %d run, %d retried (their worker died or lost their result), %d failed", counts["tasks"],
             counts["retried"], counts["failed"])
