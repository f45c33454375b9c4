"""What every job's command shares: logging on stderr, settings from TOML and flags, exit statuses.

Exit statuses: 0 done; 2 bad input, options or configuration (InputError); 1 the job could not finish
(JobFailed) or failed unexpectedly; 3 a guardrail refused to publish the result (Refused); 4 some inputs of a batch
failed (SomeInputsFailed); 130 interrupted.
"""

import contextlib
import dataclasses
import gc
import importlib.machinery
import importlib.util
import logging
import os
import sys
import traceback
from pathlib import Path

from .. import __version__
from . import config
from .cluster import ClusterOptions, ignore_port_warning
from .config import option
from .errors import InputError, JobError
from .loops import ahead_of_time
from .outputs import check_output, staged_outputs
from .storage import check_workers_see, location

log = logging.getLogger("mixlib")


@dataclasses.dataclass(frozen=True)
class JobOptions(ClusterOptions):
    """The keys every job's settings share: where it computes (:class:`ClusterOptions`), whether it may replace its
    outputs, and how much it logs. A job's settings class inherits them and adds its own."""

    overwrite: bool = option(False, "replace outputs that exist", group="input and output")
    log_level: str = option("info", "log detail on stderr", choices=("debug", "info", "warning", "error"))


def config_file(name):
    """The TOML file ``--config`` names: a path, or the name of a config shipped with mixlib (``configs/`` in the
    repository, installed as the package data ``mixlib.configs``: ``compress``, ``recommender-seed``, ...)."""
    from importlib.resources import files

    shipped = files("mixlib.configs") / f"{name}.toml"
    if "/" not in name and not name.endswith(".toml") and shipped.is_file():
        return shipped
    return Path(name)


def setup_logging(level):
    """Human-readable lines on stderr; Dask's own chatter only from errors up (debug: everything)."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S", force=True)
    log.setLevel(level.upper())
    if "distributed" in sys.modules:
        quiet_cluster_logs(level)


def quiet_cluster_logs(level):
    """Dask's, Bokeh's and Tornado's loggers from errors up (debug: everything). distributed configures its loggers
    when it is imported: import it first."""
    import distributed  # noqa: F401

    for name in ("distributed", "bokeh", "tornado"):
        logging.getLogger(name).setLevel(logging.DEBUG if level == "debug" else logging.ERROR)


def parse_settings(settings_class, job, argv, description, positional=None, config_name=None, other_keys=()):
    """Settings for ``python -m jobs.<job>``: defaults < ``--config`` TOML file < environment < flags.

    Parameters
    ----------
    settings_class : dataclass type declared with :func:`mixlib.core.config.option`
    job : str, the command after ``python -m jobs.`` (``"recommend train"`` for a subcommand)
    argv : list of str or None
    positional : str or None, a settings key that may also be given as the positional argument (several, for a
        ``tuple`` key)
    config_name : str, names the shipped default config ``configs/<config_name>.toml`` (default: ``job``)
    other_keys : keys the config file may hold for other subcommands sharing it; ignored here
    """
    config_name = config_name or job
    parser = config.Parser(prog=f"python -m jobs.{job}", description=description)
    parser.add_argument("--version", action="version", version=f"mixlib {__version__}")
    if positional:
        many = {f.name: f.type for f in dataclasses.fields(settings_class)}[positional] is tuple
        parser.add_argument(f"{positional}_positional", nargs="*" if many else "?", default=None,
                            metavar=positional.upper(), help=f"same as --{positional}")
    parser.add_argument("--config", default=config_name,
                        help=f"TOML file of settings, or the name of a config shipped with mixlib (default: "
                             f"{config_name}, the shipped configs/{config_name}.toml)")
    config.add_options(parser, settings_class)
    args = vars(parser.parse_args(argv))
    config_path = config_file(args.pop("config"))
    if positional:
        given = args.pop(f"{positional}_positional") or None  # nargs="*" gives [] when none is given
        if given is not None and args[positional] is not None:
            raise InputError(f"give the {positional} once, either as an argument or as --{positional}")
        args[positional] = args[positional] if given is None else given
    file_values = {key: value for key, value in config.read_toml(config_path).items() if key not in other_keys}
    if args.get("scheduler") is None and "DASK_SCHEDULER_ADDRESS" in os.environ:
        args["scheduler"] = os.environ["DASK_SCHEDULER_ADDRESS"]
    return config.load(settings_class, file_values, config_path, args)


def run_job(body):
    """Run ``body()`` and turn its outcome into an exit status, with one line on stderr on failure."""
    try:
        body()
        return 0
    except JobError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # the last line of defence: one line, the traceback only when debugging
        reason = _cluster_failure(e)
        if reason is not None:
            print(f"error: {reason}", file=sys.stderr)
            return 1
        if log.isEnabledFor(logging.DEBUG):
            traceback.print_exc()
        message = " ".join(str(e).split())  # one line, whatever the exception's message holds
        print(f"error: unexpected failure: {e.__class__.__name__}: {message} (rerun with --log-level debug for the "
              "traceback)", file=sys.stderr)
        return 1


def _cluster_failure(error):
    """What to say of a cluster's failure that no phase advised on, or None for another error (a job that ran
    without a cluster never loaded distributed, and has none)."""
    if "distributed" not in sys.modules:
        return None
    from dask.utils import key_split
    from distributed import KilledWorker
    from distributed.scheduler import NoWorkerError

    from .cluster import killed_worker_reason

    if isinstance(error, NoWorkerError):  # the scheduler's no-workers-timeout ran out
        return (f"the cluster has no worker left ({error}); check the workers' logs and memory limits, start "
                "workers, then run the job again (train: with --resume)")
    if isinstance(error, KilledWorker):  # a phase without its own advice (see cluster.with_rebuilds)
        return (f"{killed_worker_reason(error, key_split(error.task))}; give the workers more memory or use "
                "smaller chunks or blocks, then run the job again (train: with --resume)")
    return None


def performance_report(path):
    """Distributed's performance report of everything inside the block, written to ``path`` at its end."""
    from distributed import performance_report as report

    return report(filename=str(path))


def job_main(settings_class, job, description, plan, run, positional=None, config_name=None, other_keys=(),
             worker_paths=None, runs_here=None):
    """The whole of a job's command: settings, logging, checks before any work, a cluster, the run.

    Returns ``main(argv=None) -> exit status`` for ``jobs/<job>.py`` (see :func:`parse_settings` for the other
    parameters). ``worker_paths(job_plan) -> (reads, writes)`` names the local files the workers will read and
    the folders they will write into: on a remote cluster, the job checks that the workers see them as this
    process does before it starts (:func:`mixlib.core.storage.check_workers_see`). ``runs_here(settings, job_plan)
    -> bool`` says that a job is too small to gain from a cluster: with no ``--scheduler`` and no
    ``--performance-report``, it then runs as ``run(settings, job_plan, None)`` in this process, without starting
    a cluster, its dashboard or even importing distributed.
    """
    def main(argv=None):
        load_blas_module_alone()
        ignore_port_warning()  # before any thread starts (see there)

        def body():
            from .cluster import check_address, scheduler_address

            settings = parse_settings(settings_class, job, argv, description, positional=positional,
                                      config_name=config_name, other_keys=other_keys)
            setup_logging(settings.log_level)
            if scheduler_address(settings):
                check_address(scheduler_address(settings))  # before any input is read
            report = (location(settings.performance_report, "--performance-report") if settings.performance_report
                      else None)
            if report is not None:
                check_output(report, settings.overwrite, (".html",))
            job_plan = plan(settings)
            if (runs_here is not None and not scheduler_address(settings) and report is None
                    and runs_here(settings, job_plan)):
                log.info("a small job: it runs in this process, without a cluster or a dashboard")
                run(settings, job_plan, None)
                return
            _run_on_cluster(settings, job_plan, run, worker_paths, report)

        with ahead_of_time():  # this thread takes the loops compiled ahead of time (mixlib/core/loops.py)
            status = run_job(body)
        # The job is over: spare the interpreter's exit a garbage-collector pass over every object the run
        # left (Dask's graph expressions, mostly), which took 0.8 s after a 67-megapixel compress.
        gc.freeze()
        return status

    return main


def load_blas_module_alone():
    """Load SciPy's ``scipy.linalg.cython_blas`` without the rest of ``scipy.linalg``, for a job's process.

    numba's first compile or cache load checks that BLAS is there by importing that module; Python imports its
    package first, and all of ``scipy.linalg`` (with what it pulls in: ``numpy.f2py``) took 0.2 s, as long as
    numba's own start, in jobs that start numba in their process (dithering, the recommender, a cluster's threaded
    workers) and need none of it. The module loaded is the one numba asks for, from SciPy's own folder,
    under its own name; ``import scipy.linalg`` still works afterwards. Only for a job's process: in a user's
    process ``scipy.linalg.cython_blas`` must stay an attribute of its package. Does nothing when SciPy is missing
    or ``scipy.linalg`` is already imported."""
    name = "scipy.linalg.cython_blas"
    if name in sys.modules or "scipy.linalg" in sys.modules:
        return
    scipy_spec = importlib.util.find_spec("scipy")
    if scipy_spec is None or not scipy_spec.submodule_search_locations:
        return
    finder = importlib.machinery.FileFinder(
        os.path.join(scipy_spec.submodule_search_locations[0], "linalg"),
        (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES))
    spec = finder.find_spec(name)
    if spec is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception:  # numba's own import then meets the problem, and reports it where it matters
        del sys.modules[name]


def _run_on_cluster(settings, job_plan, run, worker_paths, report):
    """``run(settings, job_plan, client)`` on the job's cluster (:func:`mixlib.core.cluster.connect`), with its
    tasks' outcomes counted and, with ``report``, distributed's performance report written there."""
    from .cluster import connect, scheduler_address
    from .outcomes import counted_tasks

    quiet_cluster_logs(settings.log_level)
    with connect(settings) as client, counted_tasks(client), staged_outputs() as stage:
        if worker_paths is not None and scheduler_address(settings):
            check_workers_see(client, *worker_paths(job_plan))
        with performance_report(stage(report)) if report else contextlib.nullcontext():
            run(settings, job_plan, client)
