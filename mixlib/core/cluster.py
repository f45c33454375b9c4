"""Connect a job to Dask: an embedded LocalCluster on 127.0.0.1, or an existing scheduler."""

import contextlib
import dataclasses
import functools
import logging
import os

from .config import option
from .errors import InputError, JobFailed

log = logging.getLogger("mixlib")

# Times a phase is run again after losing data with a worker before the job gives up.
REBUILDS = 3


_cluster_option = functools.partial(option, group="cluster")


@dataclasses.dataclass(frozen=True)
class ClusterOptions:
    """Where a job computes. Job settings classes inherit these keys. The TLS keys apply to a remote scheduler;
    the embedded cluster never leaves 127.0.0.1."""

    scheduler: str = _cluster_option(
        "", "address of an existing Dask scheduler (tcp://host:8786); empty: an embedded local cluster. "
            "DASK_SCHEDULER_ADDRESS is used when neither flag nor file set it")
    workers: int = _cluster_option(2, "worker processes (or threads) of the embedded local cluster", minimum=1)
    threads_per_worker: int = _cluster_option(1, "threads per worker of the embedded local cluster", minimum=1)
    processes: bool = _cluster_option(
        False, "embedded cluster: worker processes (true) or threads in this process (false)")
    memory_limit: str = _cluster_option("auto", "embedded cluster: memory limit per worker ('auto', '4GiB', ...)")
    dashboard_address: str = _cluster_option(
        "127.0.0.1:8787", "embedded cluster: dashboard host:port (port 0: any free)")
    dashboard_link: str = _cluster_option(
        "", "template of the dashboard link printed at start, for clusters behind a proxy: {host} and {port} are "
            "filled in (e.g. https://proxy/{port}/status)")
    connect_timeout: float = _cluster_option(10.0, "seconds to wait for a remote scheduler", minimum=0.1)
    no_workers_timeout: float = _cluster_option(
        300.0, "embedded cluster: fail the job when its tasks waited this many seconds with no worker alive (a "
               "remote scheduler has its own setting, distributed.scheduler.no-workers-timeout)", minimum=1.0)
    performance_report: str = option("", "write Dask's performance report (task stream, profiles) to this .html",
                                     group="input and output")
    progress_seconds: float = option(30.0, "long phases show a progress bar on a terminal; otherwise a progress "
                                           "line at most every this many seconds (0: no progress output)",
                                     minimum=0.0)
    tls_ca_file: str = _cluster_option(
        "", "remote scheduler: CA certificate (PEM) that signed the cluster's certificates")
    tls_cert: str = _cluster_option("", "remote scheduler: this client's TLS certificate (PEM)")
    tls_key: str = _cluster_option(
        "", "remote scheduler: this client's TLS private key (PEM; may be inside --tls-cert)")


def security(settings):
    """``distributed.security.Security`` from the TLS settings (encryption required), or None without them.

    Raises InputError when a named file does not exist, or a certificate comes without its CA.
    """
    from distributed.security import Security

    files = {"--tls-ca-file": settings.tls_ca_file, "--tls-cert": settings.tls_cert, "--tls-key": settings.tls_key}
    if not any(files.values()):
        return None
    for flag, path in files.items():
        if path and not os.path.isfile(path):
            raise InputError(f"{flag} {path} does not exist")
    if not (settings.tls_ca_file and settings.tls_cert):
        raise InputError("TLS needs --tls-ca-file and --tls-cert (and --tls-key unless the key is in the "
                         "certificate file)")
    return Security(tls_ca_file=settings.tls_ca_file, tls_client_cert=settings.tls_cert,
                    tls_client_key=settings.tls_key or None, require_encryption=True)


def scheduler_address(settings):
    """The scheduler to connect to: the setting, else DASK_SCHEDULER_ADDRESS, else '' (embedded cluster)."""
    return settings.scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS", "")


@contextlib.contextmanager
def connect(settings, address=None):
    """Yield a ``distributed.Client``; an embedded cluster is closed on exit.

    Parameters
    ----------
    settings : ClusterOptions
    address : str or None, the scheduler address (default: :func:`scheduler_address`)
    """
    import dask
    from distributed import Client, LocalCluster

    address = scheduler_address(settings) if address is None else address
    if address:
        check_address(address)
        tls = security(settings)
        if address.startswith("tls://") and tls is None:
            raise InputError(f"the scheduler at {address} speaks TLS; give --tls-ca-file, --tls-cert and --tls-key")
        with dask.config.set(_link_config(settings.dashboard_link)):
            try:
                client = Client(address, timeout=settings.connect_timeout, security=tls)
            except (OSError, TimeoutError) as e:
                raise InputError(f"cannot reach the Dask scheduler at {address} ({e.__class__.__name__}); "
                                 "check the address and that the scheduler runs, or drop --scheduler "
                                 "to use an embedded local cluster") from None
            with client:
                log.info("connected to scheduler %s; dashboard: %s", address, client.dashboard_link)
                yield client
        return
    # Worker processes talk TCP on the loopback interface. Threaded workers use Dask's in-process transport
    # (scattering a 64-megapixel image took 0.4 s instead of 1.8 s over loopback TCP); their HTTP servers are
    # bound to 127.0.0.1 explicitly, as in-process workers would otherwise listen on every interface.
    where = ({"host": "127.0.0.1", "protocol": "tcp://"} if settings.processes
             else {"protocol": "inproc://", "worker_dashboard_address": "127.0.0.1:0"})
    # The dashboard link names the host the dashboard is bound to (an in-process scheduler's own address
    # names the machine's public interface, where the dashboard does not listen).
    bound = "http://" + (settings.dashboard_address.rsplit(":", 1)[0] or "127.0.0.1") + ":{port}/status"
    no_workers = {"distributed.scheduler.no-workers-timeout": f"{settings.no_workers_timeout}s"}
    with dask.config.set({**_link_config(settings.dashboard_link or bound), **no_workers}), _blas_threads(settings), \
            _quiet_port_warning(), \
            LocalCluster(dashboard_address=settings.dashboard_address, n_workers=settings.workers,
                         threads_per_worker=settings.threads_per_worker, processes=settings.processes,
                         memory_limit=settings.memory_limit, **where) as cluster, Client(cluster) as client:
        wanted = int(settings.dashboard_address.rsplit(":", 1)[-1] or 0)
        actual = cluster.scheduler.http_server.port
        log.info("local cluster: %d %s x %d threads; dashboard: %s%s", settings.workers,
                 "processes" if settings.processes else "threaded workers", settings.threads_per_worker,
                 client.dashboard_link, f" (port {wanted} was taken)" if wanted not in (0, actual) else "")
        yield client


def check_address(address):
    """InputError for a scheduler address (``--scheduler``, the config file or DASK_SCHEDULER_ADDRESS) that Dask
    cannot connect to: a web address (the dashboard's, most often) or an unknown scheme."""
    from distributed.comm.addressing import parse_address
    from distributed.comm.registry import backends

    scheme = parse_address(address, strict=False)[0] if "://" in address else "tcp"
    if scheme in ("http", "https"):
        raise InputError(f"the scheduler address {address} is a web address (the dashboard's?); give the "
                         "scheduler's own address, tcp://HOST:8786 or tls://HOST:8786: the dashboard port is not "
                         "the scheduler port")
    if scheme not in backends:
        raise InputError(f"the scheduler address {address} has an unknown scheme {scheme}://; give tcp://HOST:PORT "
                         "or tls://HOST:PORT")


@contextlib.contextmanager
def _quiet_port_warning():
    """No raw ``UserWarning`` when the dashboard port is taken (by another job's cluster, most often): the
    dashboard moves to a free port, and the link logged at start names it. A job's process ignores it for good
    (:func:`ignore_port_warning`); this block is for a cluster started by the Python API."""
    import warnings

    with warnings.catch_warnings():
        ignore_port_warning()
        yield


def ignore_port_warning():
    """Ignore distributed's warning that the dashboard port is taken, in this process from now on. A job calls it
    before it starts any thread: ``warnings.catch_warnings`` is not thread-safe, and a block of it in another
    thread (an import in the job's preload thread) restores the filters it found when it ends, dropping any
    filter added meanwhile."""
    import warnings

    warnings.filterwarnings("ignore", message=r"Port \d+ is already in use", category=UserWarning)


def _blas_threads(settings):
    """Threaded workers share this process's BLAS thread pool: one BLAS thread per worker thread, as the nanny
    sets for worker processes (several BLAS threads per worker thread oversubscribe the cores; 5M ratings, ALS
    rank 32 on 2 threaded workers: 4.65 s per step with OpenBLAS's default pool, 3.83 s with one thread)."""
    if settings.processes:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _link_config(template):
    """Dask's dashboard link template (``{host}``, ``{port}`` and environment variables are filled in)."""
    return {"distributed.dashboard.link": template} if template else {}


def worker_addresses(client, timeout=60):
    """The addresses of the workers now connected to ``client``'s scheduler, asked of the scheduler (after waiting
    up to ``timeout`` seconds for one while a lost worker is replaced).

    Not ``client.scheduler_info()["workers"]``: the client's periodic refresh of that cache asks for no workers,
    and can replace a full answer with an empty one between the fetch and the read.
    """
    client.wait_for_workers(1, timeout=timeout)
    return list(client.nthreads())


def killed_worker_reason(error, task_name=""):
    """What a ``KilledWorker`` means, in words for the job's one error line."""
    task = f"a task ({task_name})" if task_name else "a task"
    return (f"{task} was killed with its worker {error.allowed_failures + 1} times (most often: over the worker's "
            "memory limit; see the worker logs)")


def with_rebuilds(run, phase, advice):
    """``run(attempt)`` for attempt 1, 2, ...: again, after a pause, whenever it fails because a worker died with
    data that Dask cannot recompute (scattered data); ``run`` rebuilds that data when ``attempt > 1``. After
    REBUILDS such failures: JobFailed naming the phase and ``advice`` (what to change). A task that took its worker
    down more often than the scheduler allows (``KilledWorker``: most often the memory limit) would only do it
    again: JobFailed at once.
    """
    import time
    from concurrent.futures import CancelledError  # distributed's Future(s)CancelledError: lost dependencies

    from distributed import KilledWorker
    from distributed.comm import CommClosedError

    for attempt in range(1, REBUILDS + 2):
        try:
            return run(attempt)
        except KilledWorker as e:
            raise JobFailed(f"{phase}: {killed_worker_reason(e)}; {advice}") from None
        except (CancelledError, CommClosedError) as e:
            if attempt > REBUILDS:
                raise JobFailed(f"{phase}: workers kept failing ({e.__class__.__name__}, {REBUILDS + 1} times); "
                                f"{advice}") from None
            log.warning("%s: data lost with a worker (%s); rebuilding it and running the phase again", phase,
                        e.__class__.__name__)
            time.sleep(attempt)  # let the scheduler notice the lost worker
