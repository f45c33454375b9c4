"""Jobs on a real cluster: `dask scheduler` and two `dask worker` processes on 127.0.0.1, reached through
--scheduler, give the same bytes as the embedded cluster."""

import contextlib
import re
import socket
import subprocess
import sys
import time

import pytest
from conftest import save_png


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def dask_cluster(protocol, workers, options=(), security=None, worker_options=(), scheduler_env=None, cwd=None,
                 worker_prefix=()):
    """``dask scheduler`` and ``workers`` ``dask worker`` processes on 127.0.0.1, started as commands, ready
    (every worker registered) when the block starts and always stopped after it. Yields the address.

    ``options`` go to every command (TLS files), ``worker_options`` to the workers only; ``scheduler_env`` adds
    environment variables (Dask config) to the scheduler's; ``security`` is what a client needs to connect. The
    processes run in ``cwd`` (by default a folder of their own, not the client's, as on a real cluster); each
    worker command is started through ``worker_prefix`` (e.g. a mount namespace of its own).
    """
    import os
    import tempfile

    from distributed import Client

    port = free_port()
    address = f"{protocol}://127.0.0.1:{port}"
    folder = tempfile.TemporaryDirectory(prefix="dask-cluster-")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "cwd": cwd or folder.name}
    processes = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--protocol", protocol,
                                   "--host", "127.0.0.1", "--port", str(port), "--dashboard-address",
                                   "127.0.0.1:0", *options], env={**os.environ, **(scheduler_env or {})}, **quiet)]
    try:
        for _ in range(workers):
            processes.append(subprocess.Popen([*worker_prefix, sys.executable, "-m", "distributed.cli.dask_worker",
                                               address, "--host", "127.0.0.1", "--nthreads", "1", "--no-dashboard",
                                               "--memory-limit", "2GiB", *options, *worker_options], **quiet))
        deadline = time.monotonic() + 60
        while True:
            try:
                with Client(address, security=security, timeout=5) as client:
                    client.wait_for_workers(workers, timeout=max(1, deadline - time.monotonic()))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield address
    finally:
        # The workers first: a worker told to stop after its scheduler has gone waits for it (8 s against 0.8 s).
        for group in (processes[1:], processes[:1]):
            for process in group:
                process.terminate()
            for process in group:
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
        folder.cleanup()


@pytest.fixture(scope="module")
def shared_cluster():
    """The address of a scheduler with two worker processes (with nannies), for the whole module: the tests that
    kill a worker use it too (starting and stopping a cluster of its own took each of them about 8 s); the nanny
    restarts the killed worker, and :func:`real_cluster` waits for it before the next test."""
    with dask_cluster("tcp", workers=2) as address:
        yield address


def with_two_workers(address):
    """``address`` once both workers of its cluster are registered (a worker killed by an earlier run or test is
    restarted by its nanny)."""
    from distributed import Client

    with Client(address, timeout=30) as client:
        client.wait_for_workers(2, timeout=60)
    return address


@pytest.fixture
def real_cluster(shared_cluster):
    """The address of the module's scheduler, with its two worker processes registered."""
    return with_two_workers(shared_cluster)


def tree_bytes(path):
    if path.is_dir():
        return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
    return path.read_bytes()


@pytest.mark.parametrize("suffix,extra", [(".png", []), (".zarr", []), (".png", ["--method", "gmm", "--k", "4"])],
                         ids=["png", "zarr", "gmm"])
def test_compress_on_a_real_cluster_equals_embedded(run_job, capsys, tmp_path, small_china, real_cluster,
                                                    suffix, extra):
    """The same bytes from a real cluster, the embedded one, and this process alone (a small image's default)."""
    source = save_png(tmp_path / "in.png", small_china)
    outputs = {}
    for name, where in (("real", ["--scheduler", real_cluster]),
                        ("embedded", ["--scheduler", "", "--dashboard-address", "127.0.0.1:0", "--local-pixels", 0]),
                        ("here", ["--scheduler", ""])):
        outputs[name] = tmp_path / f"{name}{suffix}"
        status = run_job(source, "--out", outputs[name], "--k", "8", *extra, *where)
        err = capsys.readouterr().err
        assert status == 0, err
        if name == "here":
            assert "without a cluster" in err and "dashboard: " not in err and "tasks: " not in err, err
        else:  # nothing went wrong
            assert re.search(r"tasks: [1-9]\d* run, 0 retried .*, 0 failed", err), err
    assert tree_bytes(outputs["real"]) == tree_bytes(outputs["embedded"]) == tree_bytes(outputs["here"])


def test_sample_on_a_real_cluster_equals_embedded(run_sample, capsys, tmp_path, real_cluster):
    import numpy as np

    from mixlib.fit.gmm import Mixture, save_mixture

    model = tmp_path / "m.json"
    save_mixture(model, Mixture(np.array([0.4, 0.6]), np.array([[60.0, 80, 100], [180, 150, 120]]),
                                np.stack([np.eye(3) * 90, np.eye(3) * 40])), {})
    outputs = {}
    for name, where in (("real", ["--scheduler", real_cluster]),
                        ("embedded", ["--scheduler", "", "--dashboard-address", "127.0.0.1:0", "--local-pixels", 0]),
                        ("here", ["--scheduler", ""])):
        outputs[name] = tmp_path / f"{name}.png"
        status = run_sample("--model", model, "--shape", "300x520", "--chunk-size", "256", "--out", outputs[name],
                            *where)
        err = capsys.readouterr().err
        assert status == 0, err
        assert ("without a cluster" in err) == (name == "here"), err
    assert outputs["real"].read_bytes() == outputs["embedded"].read_bytes() == outputs["here"].read_bytes()


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    """A TLS-only scheduler and one worker on 127.0.0.1, with temporary certificates written to files."""
    from distributed.security import Security

    folder = tmp_path_factory.mktemp("tls")
    temporary = Security.temporary()
    files = {}
    for name, pem in (("ca", temporary.tls_ca_file), ("cert", temporary.tls_client_cert),
                      ("key", temporary.tls_client_key)):
        files[name] = folder / f"{name}.pem"
        files[name].write_text(pem)
    tls = [str(a) for a in ("--tls-ca-file", files["ca"], "--tls-cert", files["cert"], "--tls-key", files["key"])]
    security = Security(tls_ca_file=str(files["ca"]), tls_client_cert=str(files["cert"]),
                        tls_client_key=str(files["key"]), require_encryption=True)
    with dask_cluster("tls", workers=1, options=tls, security=security) as address:
        yield address, tls


def test_tls_only_scheduler(run_job, capsys, tmp_path, small_china, tls_cluster):
    address, tls = tls_cluster
    source = save_png(tmp_path / "in.png", small_china)
    status = run_job(source, "--out", tmp_path / "tls.png", "--k", "6", "--scheduler", address, *tls)
    assert status == 0, capsys.readouterr().err
    # The same job on the session cluster gives the same bytes.
    assert run_job(source, "--out", tmp_path / "plain.png", "--k", "6") == 0
    assert (tmp_path / "tls.png").read_bytes() == (tmp_path / "plain.png").read_bytes()
    # Without TLS settings the scheduler cannot be used: over tls:// without certificates, and over plain tcp://.
    for plain, message in ((address, "speaks TLS"), (address.replace("tls://", "tcp://"), "cannot reach")):
        status = run_job(source, "--out", tmp_path / "refused.png", "--scheduler", plain, "--connect-timeout", "3")
        assert status == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "refused.png").exists()


def test_tls_settings_are_checked(run_job, capsys, tmp_path, small_china):
    source = save_png(tmp_path / "in.png", small_china)
    status = run_job(source, "--out", tmp_path / "o.png", "--scheduler", "tls://127.0.0.1:1",
                     "--tls-ca-file", tmp_path / "missing.pem", "--tls-cert", tmp_path / "missing.pem")
    err = capsys.readouterr().err
    assert status == 2 and "--tls-ca-file" in err and "does not exist" in err and "Traceback" not in err


def test_train_on_a_real_cluster_equals_embedded(run_recommend, capsys, tmp_path, real_cluster):
    import numpy as np
    import zarr
    from test_recsys_recommend_job import synthetic, write_csv

    ratings = write_csv(tmp_path / "r.csv", synthetic(seed=9, n_users=200, n_items=90))
    factors = {}
    for name, where in (("real", ["--scheduler", real_cluster]),
                        ("embedded", ["--scheduler", "", "--dashboard-address", "127.0.0.1:0"])):
        models = tmp_path / name
        status = run_recommend("train", "--ratings", ratings, "--model-dir", models, "--rank", 4, "--max-steps", 6,
                               "--block-ratings", 1000, *where)
        assert status == 0, capsys.readouterr().err
        group = zarr.open_group(str(models / "versions" / "v0001"), mode="r")
        factors[name] = [np.asarray(group[key][...]) for key in ("user_factors", "item_factors", "item_bias")]
    for real, embedded in zip(factors["real"], factors["embedded"]):
        np.testing.assert_array_equal(real, embedded)


def test_als_survives_a_worker_killed_mid_training(tmp_path, caplog, real_cluster):
    """SIGKILL to a worker process between ALS steps: its rating blocks are lost, scattered again, and the
    training ends with the factors of an undisturbed run."""
    import dataclasses
    import logging
    import os
    import signal

    import numpy as np
    from distributed import Client
    from test_recsys_als import low_rank_ratings, options, training_data

    from mixlib.recsys import als

    users, items, ratings, _ = low_rank_ratings(seed=11, n_users=300, n_items=200)
    data = training_data(users, items, ratings, np.random.default_rng(0).random(len(users)) < 0.1)
    opts = options(max_steps=6, block_ratings=1500)
    start = als.TrainingState.start(*als.initial_items(data, opts, np.random.default_rng(0)))
    with Client(real_cluster) as client:
        undisturbed, _ = als.fit_als(client, data, opts, start)
        # Gathered now: the users stay on the workers, and the kill below may take some of them.
        best = [dataclasses.asdict(undisturbed.best.here())]
        killed = []

        def kill_a_worker(state):
            if state.step == 2:
                pids = client.run(os.getpid)
                os.kill(next(iter(pids.values())), signal.SIGKILL)
                killed.append(state.step)

        with caplog.at_level(logging.WARNING, logger="mixlib"):
            disturbed, _ = als.fit_als(client, data, opts, start, checkpoint=kill_a_worker, checkpoint_every=1)
        best.append(dataclasses.asdict(disturbed.best.here()))
    assert killed == [2]
    assert any("data lost with a worker" in r.getMessage() for r in caplog.records)
    for a, b in zip(best[0].values(), best[1].values()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(undisturbed.history, disturbed.history)


def test_three_jobs_at_once_on_one_scheduler_equal_their_solo_runs(tmp_path, real_cluster, small_china, flower, capsys,
                                                                  run_job, run_recommend):
    """Two compress jobs and one train, started together as commands against one scheduler, write what each job
    writes when it runs alone there (the solo runs are made in this process, one after another)."""
    import numpy as np
    import zarr
    from conftest import REPO, cli_command, downscale
    from test_recsys_recommend_job import synthetic, write_csv

    inputs = {"china": save_png(tmp_path / "china.png", small_china),
              "flower": save_png(tmp_path / "flower.png", downscale(flower, (200, 133)))}
    ratings = write_csv(tmp_path / "r.csv", synthetic(seed=12, n_users=250, n_items=100))
    (tmp_path / "empty.toml").write_text("")
    common = ["--scheduler", real_cluster, "--config", tmp_path / "empty.toml"]

    def jobs(tag):
        """``(module, argv)`` of the three jobs, writing outputs tagged ``tag``."""
        return [("jobs.compress", [inputs["china"], "--out", tmp_path / f"china-{tag}.png", "--k", 8, *common]),
                ("jobs.compress", [inputs["flower"], "--out", tmp_path / f"flower-{tag}.png", "--k", 6, "--method",
                                   "gmm", *common]),
                ("jobs.recommend", ["train", "--ratings", ratings, "--model-dir", tmp_path / f"models-{tag}",
                                    "--rank", 4, "--max-steps", 8, "--block-ratings", 2000, *common])]

    for module, argv in jobs("solo"):
        assert (run_job if module == "jobs.compress" else run_recommend)(*argv) == 0, capsys.readouterr().err
    running = [subprocess.Popen(command, env=env, cwd=REPO, stderr=subprocess.PIPE, text=True)
               for command, env in (cli_command(*argv, module=module) for module, argv in jobs("together"))]
    for process in running:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
    for name in ("china", "flower"):
        assert (tmp_path / f"{name}-solo.png").read_bytes() == (tmp_path / f"{name}-together.png").read_bytes()
    groups = [zarr.open_group(str(tmp_path / f"models-{tag}" / "versions" / "v0001"), mode="r")
              for tag in ("solo", "together")]
    for key in ("user_factors", "item_factors", "user_bias", "item_bias"):
        np.testing.assert_array_equal(groups[0][key][...], groups[1][key][...])


def dashboard_task_names(port):
    """The task-group names that the dashboard's /status page shows (its task-progress chart), fetched over
    HTTP and its Bokeh websocket as a browser would."""
    from bokeh.client import pull_session
    from bokeh.models import ColumnDataSource

    with pull_session(url=f"http://127.0.0.1:{port}/status") as session:
        return {name for model in session.document.models if isinstance(model, ColumnDataSource)
                for name in model.data.get("name", []) if isinstance(name, str)}


def test_dashboard_status_page_shows_the_algorithm_while_a_job_runs(tmp_path, free_port):
    import urllib.request

    import numpy as np
    import zarr
    from conftest import REPO, cli_command

    pixels = np.random.default_rng(0).integers(0, 64, (4096, 4096, 3), dtype=np.uint8) * 4  # 262144 colours
    zarr.create_array(str(tmp_path / "big.zarr"), data=pixels, chunks=(512, 512, 3))
    (tmp_path / "empty.toml").write_text("")
    # k=16 with --tol 0: Lloyd runs to exact convergence, over a hundred kmeans-stats rounds in about 4 s, so that
    # the polls below, each a Bokeh session of a fraction of a second, cannot miss the fit.
    command, env = cli_command(tmp_path / "big.zarr", "--k", 16, "--tol", 0, "--out", tmp_path / "out.zarr",
                               "--chunk-size", 512, "--config", tmp_path / "empty.toml", "--dashboard-address",
                               f"127.0.0.1:{free_port}")
    job = subprocess.Popen(command, env=env, cwd=REPO, stderr=subprocess.PIPE, text=True)
    seen, page = set(), ""
    try:
        while job.poll() is None:
            try:
                page = page or urllib.request.urlopen(f"http://127.0.0.1:{free_port}/status", timeout=5).read().decode()
                seen |= dashboard_task_names(free_port)
            except (OSError, RuntimeError):  # bokeh: "Connection to server was lost"
                pass  # the dashboard is not up yet, or closed as the job ends
            time.sleep(0.2)
    finally:
        _, stderr = job.communicate(timeout=300)
    assert job.returncode == 0, stderr
    assert f"dashboard: http://127.0.0.1:{free_port}/status" in stderr
    assert "Dask" in page and "bokeh" in page.lower()
    assert "colour-histogram" in seen and ("palette-labels" in seen or "kmeans-stats" in seen), seen


def kill_a_worker_when(client, prefix, deadline_seconds=120, every=False):
    """Wait until a task whose key starts with ``prefix`` is processing, then SIGKILL one worker process (or
    ``every`` one); return the first killed pid (or None if the phase never showed)."""
    import os
    import signal

    def processing(dask_scheduler, prefix=prefix):
        return any(str(ts.key).startswith(prefix) or (isinstance(ts.key, tuple) and str(ts.key[0]).startswith(prefix))
                   for ts in dask_scheduler.tasks.values() if ts.state == "processing")

    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        if client.run_on_scheduler(processing):
            pids = list(client.run(os.getpid).values())
            for pid in pids if every else pids[:1]:
                os.kill(pid, signal.SIGKILL)
            return pids[0]
        time.sleep(0.05)
    return None


def run_with_and_without_a_kill(tmp_path, argv_for, phase, address, module="jobs.compress",
                                runs=("undisturbed", "killed")):
    """Run a job twice on the real cluster at ``address`` (two worker processes with nannies, both registered), the
    second time with a worker SIGKILLed while ``phase`` runs.

    ``argv_for(out)`` gives the job's arguments for an output path. Returns ``{"undisturbed": path, "killed": path}``
    and the killed run's stderr. ``runs`` names the runs to make, when an undisturbed run of the same job was made
    before (its output does not depend on the cluster, nor on when it was made).
    """
    from conftest import REPO, cli_command
    from distributed import Client

    (tmp_path / "empty.toml").write_text("")
    outputs, stderr = {}, ""
    with Client(address) as watcher:
        for number, run in enumerate(runs):
            if number:
                watcher.wait_for_workers(2, timeout=60)  # the nanny restarts a killed worker
            outputs[run] = tmp_path / f"{run}.zarr"
            command, env = cli_command(*argv_for(outputs[run]), "--scheduler", address, "--config",
                                       tmp_path / "empty.toml", module=module)
            job = subprocess.Popen(command, env=env, cwd=REPO, stderr=subprocess.PIPE, text=True)
            killed = kill_a_worker_when(watcher, phase) if run == "killed" else None
            _, stderr = job.communicate(timeout=300)
            assert job.returncode == 0, stderr
            assert run == "undisturbed" or killed is not None, "the phase never showed on the scheduler"
    return outputs, stderr


def _compress_argv(source):
    return lambda out: (source, "--k", 8, "--out", out, "--chunk-size", 256)


@pytest.fixture(scope="module")
def undisturbed_compress(tmp_path_factory, shared_cluster):
    """``undisturbed(source, levels, side) -> (input, output)``: the input image of the killed-compress tests and the
    output of an undisturbed run of their job on it, made once for the parametrisations that share them (the Zarr
    input's two phases)."""
    import numpy as np
    import zarr

    made = {}

    def undisturbed(source, levels, side):
        if (source, levels, side) not in made:
            folder = tmp_path_factory.mktemp(f"undisturbed-{source}-{levels}")
            pixels = np.random.default_rng(1).integers(0, levels, (side, side, 3), dtype=np.uint8) * (256 // levels)
            image = folder / f"in.{source}"
            if source == "zarr":
                zarr.create_array(str(image), data=pixels, chunks=(256, 256, 3))
            else:
                save_png(image, pixels)
            outputs, _ = run_with_and_without_a_kill(folder, _compress_argv(image), None,
                                                     with_two_workers(shared_cluster), runs=("undisturbed",))
            made[source, levels, side] = image, outputs["undisturbed"]
        return made[source, levels, side]

    return undisturbed


@pytest.mark.parametrize("source, phase", [("zarr", "colour-histogram"), ("zarr", "palette-labels"),
                                           ("png", "colour-histogram"), ("png", "kmeans-stats")])
def test_compress_survives_a_worker_killed_mid_phase(tmp_path, source, phase, real_cluster, undisturbed_compress):
    """Chunks read lazily are recomputed; a decoded image's scattered blocks, and the fit's distinct colours, are
    scattered again from the client and the phase reruns: the output is the undisturbed run's."""
    import numpy as np
    import zarr

    # The compiled Lloyd pass is quick: the fit needs millions of distinct colours to last long enough to be hit
    # (2048 x 2048 random 8-bit pixels: 3.7 million, 15 blocks of points per Lloyd iteration).
    image, undisturbed = undisturbed_compress(source, *((256, 2048) if phase == "kmeans-stats" else (32, 3072)))
    outputs, stderr = run_with_and_without_a_kill(tmp_path, _compress_argv(image), phase, real_cluster,
                                                  runs=("killed",))
    assert "data lost with a worker" in stderr or source == "zarr"
    retried = re.search(r"tasks: \d+ run, (\d+) retried .*, 0 failed", stderr)
    assert retried and (int(retried.group(1)) > 0 or source == "png"), stderr  # lazy chunks: Dask retried them
    a, b = zarr.open_group(str(undisturbed), mode="r"), zarr.open_group(str(outputs["killed"]), mode="r")
    np.testing.assert_array_equal(a["labels"][...], b["labels"][...])
    np.testing.assert_array_equal(a["palette"][...], b["palette"][...])


def test_sample_survives_a_worker_killed_mid_draw(tmp_path, real_cluster):
    """Sampling tasks depend on nothing scattered: Dask recomputes what the killed worker held."""
    import numpy as np
    import zarr

    from mixlib.fit.gmm import Mixture, save_mixture

    model = tmp_path / "m.json"
    save_mixture(model, Mixture(np.array([0.3, 0.7]), np.array([[50.0, 90, 120], [200, 160, 90]]),
                                np.stack([np.eye(3) * 60, np.eye(3) * 30])), {})
    outputs, _ = run_with_and_without_a_kill(
        tmp_path, lambda out: ("--model", model, "--shape", "3072x3072", "--chunk-size", 256, "--out", out),
        "mixture-sample", real_cluster, module="jobs.sample")
    a, b = (zarr.open_array(str(outputs[run]), mode="r") for run in ("undisturbed", "killed"))
    np.testing.assert_array_equal(a[...], b[...])


def test_a_job_whose_workers_are_all_gone_stops_with_one_line(tmp_path):
    """Every worker killed mid-job (no nanny to restart them): the scheduler's no-workers timeout fails the tasks,
    and the job stops with one line, exit status 1, and no output."""
    import numpy as np
    import zarr
    from conftest import REPO, cli_command
    from distributed import Client

    pixels = np.random.default_rng(3).integers(0, 32, (3072, 3072, 3), dtype=np.uint8) * 8
    zarr.create_array(str(tmp_path / "in.zarr"), data=pixels, chunks=(256, 256, 3))
    (tmp_path / "empty.toml").write_text("")
    with dask_cluster("tcp", workers=2, worker_options=["--no-nanny"],
                      scheduler_env={"DASK_DISTRIBUTED__SCHEDULER__NO_WORKERS_TIMEOUT": "3s"}) as address, \
            Client(address) as watcher:
        command, env = cli_command(tmp_path / "in.zarr", "--k", 8, "--out", tmp_path / "out.zarr", "--chunk-size",
                                   256, "--scheduler", address, "--config", tmp_path / "empty.toml")
        job = subprocess.Popen(command, env=env, cwd=REPO, stderr=subprocess.PIPE, text=True)
        assert kill_a_worker_when(watcher, "colour-histogram", every=True) is not None
        _, stderr = job.communicate(timeout=120)
    lines = stderr.strip().splitlines()
    assert job.returncode == 1, stderr
    assert lines[-1].startswith("error: the cluster has no worker left") and "Traceback" not in stderr, lines[-3:]
    assert not (tmp_path / "out.zarr").exists() and not list(tmp_path.glob(".out*"))


def test_task_outcomes_count_a_task_retried_after_its_worker_died_and_a_failed_one(real_cluster, caplog):
    """Brute force: kill the very worker that runs a task; Dask reruns it elsewhere, and the summary counts one
    retry (the quick tasks run after it, so none of their results is lost and recomputed). A task that raises
    counts as failed; a fresh client's summary counts only its own tasks."""
    import logging
    import os
    import signal

    from distributed import Client

    from mixlib.core.outcomes import counted_tasks

    def _sleep_then(value, seconds):  # local functions travel by value: the workers cannot import this module
        time.sleep(seconds)
        return value

    def _fail(value):
        raise ValueError(value)

    def running_on(dask_scheduler, key):
        return getattr(getattr(dask_scheduler.tasks.get(key), "processing_on", None), "address", None)

    with Client(real_cluster) as client, caplog.at_level(logging.INFO, logger="mixlib"):
        with counted_tasks(client):
            slow = client.submit(_sleep_then, "slow", 3, pure=False)
            deadline = time.monotonic() + 60
            while not (where := client.run_on_scheduler(running_on, key=slow.key)):
                assert time.monotonic() < deadline and slow.status == "pending", slow.status
                time.sleep(0.05)
            os.kill(client.run(os.getpid, workers=[where])[where], signal.SIGKILL)
            assert slow.result(timeout=120) == "slow"
            assert client.gather(client.map(_sleep_then, range(5), seconds=0, pure=False)) == list(range(5))
            failing = client.submit(_fail, "on purpose", pure=False)
            with pytest.raises(ValueError):
                failing.result(timeout=60)
        client.wait_for_workers(2, timeout=60)
    assert "tasks: 7 run, 1 retried (their worker died or lost their result), 1 failed" in caplog.text

    caplog.clear()
    with Client(real_cluster) as client, caplog.at_level(logging.INFO, logger="mixlib"), counted_tasks(client):
        assert client.submit(_sleep_then, 1, 0, pure=False).result(timeout=60) == 1
    assert "tasks: 1 run, 0 retried (their worker died or lost their result), 0 failed" in caplog.text


def test_a_task_that_kills_its_workers_stops_the_job_with_advice(tmp_path):
    """One chunk bigger than a worker's memory limit: the nanny kills each worker that runs it, the scheduler gives
    up on the task (KilledWorker), and the job stops at once with one line naming the phase and what to change,
    exit status 1, no output, and the summary counts the failed task."""
    import numpy as np
    import zarr
    from conftest import REPO, cli_command

    pixels = np.random.default_rng(5).integers(0, 256, (6144, 6144, 3), dtype=np.uint8)
    zarr.create_array(str(tmp_path / "in.zarr"), data=pixels, chunks=(6144, 6144, 3))
    (tmp_path / "empty.toml").write_text("")
    with dask_cluster("tcp", workers=2, worker_options=["--memory-limit", "300MB"],
                      scheduler_env={"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1"}) as address:
        command, env = cli_command(tmp_path / "in.zarr", "--k", 8, "--chunk-size", 6144, "--out", tmp_path / "out.zarr",
                                   "--scheduler", address, "--config", tmp_path / "empty.toml")
        done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr
    assert lines[-1] == ("error: colour histogram: a task was killed with its worker 2 times (most often: over the "
                         "worker's memory limit; see the worker logs); give the workers more memory or use smaller "
                         "chunks (--chunk-size)"), lines[-1]
    assert "Traceback" not in done.stderr and re.search(r"tasks: 1 run, 1 retried .*, 1 failed", done.stderr)
    assert not (tmp_path / "out.zarr").exists() and not list(tmp_path.glob(".out*"))


def test_killed_worker_outside_a_phase_with_advice_is_one_line_and_status_1(capsys):
    """Phases without their own advice (sampling, serving) still end with one line that says what to change."""
    import types

    from distributed import KilledWorker

    from mixlib.core.cli import run_job

    def body():
        raise KilledWorker(("mixture-sample-0f3a9c2e", 0, 1), types.SimpleNamespace(address="tcp://w:1"), 3)

    assert run_job(body) == 1
    assert capsys.readouterr().err == (
        "error: a task (mixture-sample) was killed with its worker 4 times (most often: over the worker's memory "
        "limit; see the worker logs); give the workers more memory or use smaller chunks or blocks, then run the "
        "job again (train: with --resume)\n")


# ----------------------------------------------------------------------------------- paths on a remote cluster

def _relative_inputs(folder, pixels):
    """``rel/in.zarr`` and ``rel/in.tif`` (tiled) of ``pixels`` under ``folder``."""
    import numpy as np
    import tifffile
    import zarr

    (folder / "rel").mkdir()
    zarr.create_array(str(folder / "rel" / "in.zarr"), shape=pixels.shape, dtype=np.uint8,
                      chunks=(64, 64, pixels.shape[2]))[...] = pixels
    tifffile.imwrite(folder / "rel" / "in.tif", pixels, tile=(64, 64), photometric="rgb")


def _zarr_output(path):
    import zarr

    group = zarr.open_group(str(path), mode="r")
    return group["labels"][...], group["palette"][...]


@pytest.mark.parametrize("name", ["in.zarr", "in.tif"])
def test_relative_paths_reach_workers_started_elsewhere(run_job, capsys, tmp_path, monkeypatch, small_china,
                                                        real_cluster, name):
    """Workers run in another folder: relative input and output paths are the client's, not theirs."""
    import numpy as np

    client_folder = tmp_path / "client"
    client_folder.mkdir()
    _relative_inputs(client_folder, small_china)
    monkeypatch.chdir(client_folder)
    status = run_job(f"rel/{name}", "--out", "rel/out.zarr", "--k", "8", "--chunk-size", "64",
                     "--scheduler", real_cluster)
    err = capsys.readouterr().err
    assert status == 0, err
    labels, palette = _zarr_output(client_folder / "rel" / "out.zarr")
    assert len(palette) == 8 and len(np.unique(labels)) == 8
    reference = tmp_path / "reference.zarr"
    assert run_job(save_png(tmp_path / "in.png", small_china), "--out", reference, "--k", "8", "--chunk-size",
                   "64", "--scheduler", real_cluster) == 0, capsys.readouterr().err
    assert tree_bytes(client_folder / "rel" / "out.zarr") == tree_bytes(reference)
    assert [p.name for p in (client_folder / "rel").iterdir() if p.name.startswith(".")] == []


def test_sample_writes_a_relative_zarr_output_where_the_client_says(run_sample, capsys, tmp_path, monkeypatch,
                                                                    real_cluster):
    import numpy as np

    from mixlib.fit.gmm import Mixture, save_mixture

    save_mixture(tmp_path / "m.json", Mixture(np.array([1.0]), np.array([[120.0, 90, 60]]), np.eye(3)[None] * 50),
                 {})
    monkeypatch.chdir(tmp_path)
    status = run_sample("--model", "m.json", "--shape", "100x130", "--out", "rel/s.zarr", "--scheduler", real_cluster)
    assert status == 0, capsys.readouterr().err
    import zarr

    drawn = zarr.open_array(str(tmp_path / "rel" / "s.zarr"), mode="r")[...]
    assert drawn.shape == (100, 130, 3) and abs(drawn.reshape(-1, 3).mean(0) - [120, 90, 60]).max() < 2


def _hiding(folder):
    """A command prefix that runs a command in a mount namespace of its own where ``folder`` is an empty tmpfs:
    a worker on a machine that does not share the client's disk. Skips the test where namespaces are not allowed."""
    prefix = ["unshare", "--mount", "--propagation", "private", "sh", "-c", f"mount -t tmpfs none {folder} && "
              'exec "$@"', "hide"]
    if subprocess.run([*prefix, "true"], capture_output=True).returncode != 0:
        pytest.skip("mount namespaces are not available here (unshare needs root)")
    return prefix


@pytest.fixture(scope="module")
def unshared_folder(tmp_path_factory):
    """``(folder, address)``: a folder of the client's and a cluster whose workers do not see it."""
    folder = tmp_path_factory.mktemp("client-only")
    with dask_cluster("tcp", workers=1, worker_prefix=_hiding(folder)) as address:
        yield folder, address


@pytest.mark.parametrize("case", ["zarr-input", "tiff-input", "zarr-output", "checkpoint"])
def test_workers_that_cannot_see_a_path_stop_the_job_with_one_line(run_job, capsys, tmp_path, unshared_folder,
                                                                   small_china, case):
    """A worker that sees another disk at the same path: exit status 2 before any work, nothing written."""
    hidden, address = unshared_folder
    hidden = hidden / case
    hidden.mkdir()
    _relative_inputs(hidden, small_china)
    _relative_inputs(tmp_path, small_china)
    source, out, extra = {
        "zarr-input": (hidden / "rel" / "in.zarr", tmp_path / "out.png", []),
        "tiff-input": (hidden / "rel" / "in.tif", tmp_path / "out.png", []),
        "zarr-output": ("sample:china.jpg", hidden / "out.zarr", []),
        "checkpoint": (tmp_path / "rel" / "in.zarr", tmp_path / "out.png", ["--checkpoint-dir", hidden / "ck"]),
    }[case]
    def files():
        return sorted(str(p) for folder in (hidden, tmp_path) for p in folder.rglob("*"))

    before = files()
    status = run_job(source, "--out", out, *extra, "--scheduler", address)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert status == 2, err
    assert len(lines) == 1 and "the workers cannot see" in lines[0] and "fsspec URL" in lines[0], err
    assert "Traceback" not in err
    assert files() == before  # no output, no probe file, no folder left behind


def test_a_batch_survives_a_worker_killed_mid_batch(tmp_path, china, real_cluster):
    """A worker SIGKILLed while it compresses images of a batch: its tasks run again elsewhere (they read their
    files again), and every output has the bytes of an undisturbed run."""
    import numpy as np
    from conftest import REPO, cli_command, downscale
    from distributed import Client

    folder = tmp_path / "in"
    for i in range(40):
        save_png(folder / f"p{i:02d}.png", np.roll(downscale(china, (200, 140)), 5 * i, axis=1))
    (tmp_path / "empty.toml").write_text("")
    with Client(real_cluster) as watcher:
        for run in ("undisturbed", "killed"):
            command, env = cli_command(folder, "--out", tmp_path / run / "{relpath}.png", "--k", 24, "--scheduler",
                                       real_cluster, "--config", tmp_path / "empty.toml")
            job = subprocess.Popen(command, env=env, cwd=REPO, stderr=subprocess.PIPE, text=True)
            killed = kill_a_worker_when(watcher, "compress-image") if run == "killed" else None
            _, stderr = job.communicate(timeout=300)
            assert job.returncode == 0, stderr
            assert run == "undisturbed" or killed is not None, "no compress-image task showed on the scheduler"
    assert "batch: 40 written, 0 skipped, 0 failed" in stderr
    for path in sorted((tmp_path / "undisturbed").glob("*.png")):
        assert (tmp_path / "killed" / path.name).read_bytes() == path.read_bytes(), path.name


def test_dataset_training_survives_a_worker_killed_mid_training(tmp_path, real_cluster):
    """A Parquet dataset prepared and blocked by `dask worker` processes (started in another folder), with a worker
    SIGKILLed between ALS steps: the blocks it held are computed again from their lineage (the files read again),
    and the factors equal those of the same files prepared and trained in this process."""
    import dataclasses
    import os
    import signal

    import numpy as np
    from distributed import Client
    from test_recsys_als import options
    from test_recsys_dataset import random_rows, write_parts

    from mixlib.recsys import als
    from mixlib.recsys.dataset import Tasks, dataset_files, prepare_dataset, rating_blocks

    files = dataset_files(write_parts(tmp_path / "d", random_rows(8000, seed=7), 5))
    opts = options(max_steps=5, init="svd", rank=4)

    def fitted(client, kill_at=None):
        tasks = Tasks(client)
        prepared = prepare_dataset(tasks, files, min_entries=1, validation=0, test=0, seed=0,
                                   shard_ratings=1500)
        blocks = rating_blocks(prepared, parts=(0,), shift=False, block_ratings=1500)
        sides = tuple(als.BlockedRatings.placed(None, b, counts, side) if client is None else
                      als.BlockedRatings(None, b, counts, side)
                      for b, counts, side in ((blocks.by_user, blocks.user_counts, "users"),
                                              (blocks.by_item, blocks.item_counts, "items")))
        data = als.TrainingData(None, (np.zeros(0, int), np.zeros(0, int), np.zeros(0)), 0.0, sides)
        start = als.TrainingState.start(*als.initial_items(data, opts, np.random.default_rng(0), client=client))

        def kill_a_worker(state):
            if state.step == kill_at:
                os.kill(next(iter(client.run(os.getpid).values())), signal.SIGKILL)

        final, _ = als.fit_als(client, data, opts, start, checkpoint=kill_a_worker, checkpoint_every=1)
        return dataclasses.asdict(final.current.here())  # the users gathered from the workers

    here = fitted(None)
    with Client(real_cluster) as client:
        there = fitted(client, kill_at=2)
        assert len(client.nthreads()) >= 1
    for a, b in zip(here.values(), there.values()):
        np.testing.assert_array_equal(a, b)


def test_item_blocks_are_spread_over_the_workers_in_turn(tmp_path, real_cluster):
    """Item blocks built by tasks (groups of consecutive items sit on one worker) are moved so that block i is on
    the (i mod W)-th worker, where the item half-step's task for it takes that worker's copy of the design."""
    import numpy as np
    from distributed import Client
    from test_recsys_als import options
    from test_recsys_dataset import random_rows, write_parts

    from mixlib.core.cluster import worker_addresses
    from mixlib.recsys import als
    from mixlib.recsys.dataset import Tasks, dataset_files, prepare_dataset, rating_blocks

    files = dataset_files(write_parts(tmp_path / "d", random_rows(20_000, seed=9, n_users=2000, n_items=800), 4))
    with Client(real_cluster) as client:
        prepared = prepare_dataset(Tasks(client), files, min_entries=0, validation=0.1, test=0, seed=0,
                                   shard_ratings=1000)
        blocks = rating_blocks(prepared, parts=(0,), shift=False, block_ratings=500, held=(1,))
        sides = (als.BlockedRatings(None, blocks.by_user, blocks.user_counts, "users"),
                 als.BlockedRatings(None, blocks.by_item, blocks.item_counts, "items", blocks.held_by_item))
        data = als.TrainingData(None, int(prepared.part_counts[1]), 0.0, sides)
        by_item = als._Sides(client, data, options()).by_item
        workers = worker_addresses(client)
        assert len(by_item.blocks) > 10
        client.gather(by_item.blocks + by_item.held)
        for blocks_of_side in (by_item.blocks, by_item.held):
            holders = client.who_has(blocks_of_side)
            assert all(workers[i % len(workers)] in holders[block.key] for i, block in enumerate(blocks_of_side))
        np.testing.assert_array_equal(np.concatenate([np.diff(b[0]) for b in client.gather(by_item.blocks)]),
                                      blocks.item_counts)


def _train_on_parts(folder):
    """``argv_for`` of the train job of the killed-build tests: one build (no refit) of the dataset ``folder``."""
    def argv_for(models):
        return ("train", "--ratings", folder, "--model-dir", models, "--rank", 4, "--max-steps", 3,
                "--block-ratings", 4000, "--checkpoint-every", 0, "--force-publish", "--no-refit")
    return argv_for


@pytest.fixture(scope="module")
def undisturbed_dataset_training(tmp_path_factory, shared_cluster):
    """A Parquet dataset and the model of an undisturbed train job on it (a real cluster), made once for the
    killed-build tests: ``(folder, model_dir)``."""
    from test_recsys_dataset import random_rows, write_parts

    tmp_path = tmp_path_factory.mktemp("undisturbed-training")
    folder = write_parts(tmp_path / "d", random_rows(120_000, seed=8, n_users=3000, n_items=600), 6)
    outputs, _ = run_with_and_without_a_kill(tmp_path, _train_on_parts(folder), None, with_two_workers(shared_cluster),
                                             module="jobs.recommend", runs=("undisturbed",))
    return folder, outputs["undisturbed"]


@pytest.mark.parametrize("phase", ["ratings-build-shard", "ratings-transposed-block"])
def test_train_on_a_dataset_survives_a_worker_killed_mid_build(tmp_path, phase, undisturbed_dataset_training,
                                                               real_cluster):
    """The whole `train` job on a Parquet dataset, a worker SIGKILLed while the shards (or the item blocks) are
    built: the lost pieces are computed again from their lineage, and the published model equals an undisturbed
    run's, bit for bit."""
    import dataclasses

    import numpy as np

    from mixlib.recsys.store import ModelStore

    folder, undisturbed_models = undisturbed_dataset_training
    outputs, stderr = run_with_and_without_a_kill(tmp_path, _train_on_parts(folder), phase, real_cluster,
                                                  module="jobs.recommend", runs=("killed",))
    undisturbed, killed = ModelStore(undisturbed_models).load(), ModelStore(outputs["killed"]).load()
    for name, values in dataclasses.asdict(undisturbed.factors).items():
        np.testing.assert_array_equal(getattr(killed.factors, name), values, err_msg=name)
    np.testing.assert_array_equal(killed.seen_indices, undisturbed.seen_indices)


def test_recommend_survives_a_worker_killed_mid_lists(tmp_path, run_recommend, real_cluster):
    """`recommend` for every user as a Parquet dataset, a worker SIGKILLed while the blocks' lists are made: the
    item arrays are scattered again and every block runs again; the parts equal an undisturbed run's."""
    import pyarrow.parquet as pq
    from test_recsys_dataset import random_rows, write_one

    ratings = write_one(tmp_path / "r.csv", random_rows(60_000, seed=4, n_users=40_000, n_items=3000))
    models = tmp_path / "models"
    assert run_recommend("train", "--ratings", ratings, "--model-dir", models, "--rank", 8, "--max-steps", 2,
                         "--scheduler", "", "--force-publish") == 0

    def argv_for(out):
        return ("recommend", "--model-dir", models, "--out", out.with_suffix(".parquet"), "--top", 50,
                "--block-users", 200)

    outputs, _ = run_with_and_without_a_kill(tmp_path, argv_for, "recommend-top", real_cluster, module="jobs.recommend")
    order = [("user", "ascending"), ("rank", "ascending")]
    undisturbed, killed = (pq.read_table(outputs[run].with_suffix(".parquet")).sort_by(order).to_pydict()
                           for run in ("undisturbed", "killed"))
    assert len(undisturbed["user"]) > 10_000 and killed == undisturbed


def test_train_on_a_dataset_on_a_real_cluster_equals_one_file(run_recommend, capsys, tmp_path, real_cluster,
                                                              monkeypatch):
    """The train job on a folder of Parquet files, named by a relative path, read by `dask worker` processes in
    another folder, publishes the model of the same ratings in one file, trained in the job's process."""
    import numpy as np
    from test_recsys_dataset import random_rows, write_one, write_parts

    from mixlib.recsys.store import ModelStore

    rows = random_rows(5000, seed=8)
    common = ("--rank", 4, "--max-steps", 5, "--block-ratings", 1200, "--force-publish")
    write_parts(tmp_path / "d", rows, 3)
    monkeypatch.chdir(tmp_path)
    for name, ratings, where in (("real", "d", ["--scheduler", real_cluster]),
                                 ("here", write_one(tmp_path / "all.csv", rows), ["--scheduler", ""])):
        status = run_recommend("train", "--ratings", ratings, "--model-dir", tmp_path / name, *common, *where)
        assert status == 0, capsys.readouterr().err
    real, here = ModelStore(tmp_path / "real").load(), ModelStore(tmp_path / "here").load()
    for name, values in real.factors.named().items():
        np.testing.assert_array_equal(values, getattr(here.factors, name), err_msg=name)
