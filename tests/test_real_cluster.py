"""Jobs on a real cluster: `dask scheduler` and two `dask worker` processes on 127.0.0.1, reached through
--scheduler, give the same bytes as the embedded cluster."""

import contextlib
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
def dask_cluster(protocol, workers, options=(), security=None):
    """``dask scheduler`` and ``workers`` ``dask worker`` processes on 127.0.0.1, started as commands, ready
    (every worker registered) when the block starts and always stopped after it. Yields the address.

    ``options`` go to every command (TLS files); ``security`` is what a client needs to connect.
    """
    from distributed import Client

    port = free_port()
    address = f"{protocol}://127.0.0.1:{port}"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    processes = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--protocol", protocol,
                                   "--host", "127.0.0.1", "--port", str(port), "--dashboard-address",
                                   "127.0.0.1:0", *options], **quiet)]
    try:
        for _ in range(workers):
            processes.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address,
                                               "--host", "127.0.0.1", "--nthreads", "1", "--no-dashboard",
                                               "--memory-limit", "2GiB", *options], **quiet))
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
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture(scope="module")
def real_cluster():
    """The address of a scheduler with two worker processes."""
    with dask_cluster("tcp", workers=2) as address:
        yield address


def tree_bytes(path):
    if path.is_dir():
        return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
    return path.read_bytes()


@pytest.mark.parametrize("suffix,extra", [(".png", []), (".zarr", []), (".png", ["--method", "gmm", "--k", "4"])],
                         ids=["png", "zarr", "gmm"])
def test_compress_on_a_real_cluster_equals_embedded(run_job, capsys, tmp_path, small_china, real_cluster,
                                                    suffix, extra):
    source = save_png(tmp_path / "in.png", small_china)
    outputs = {}
    for name, where in (("real", ["--scheduler", real_cluster]),
                        ("embedded", ["--scheduler", "", "--dashboard-address", "127.0.0.1:0"])):
        outputs[name] = tmp_path / f"{name}{suffix}"
        status = run_job(source, "--out", outputs[name], "--k", "8", *extra, *where)
        assert status == 0, capsys.readouterr().err
    assert tree_bytes(outputs["real"]) == tree_bytes(outputs["embedded"])


def test_sample_on_a_real_cluster_equals_embedded(run_sample, capsys, tmp_path, real_cluster):
    import numpy as np

    from mixlib.gmm import Mixture, save_mixture

    model = tmp_path / "m.json"
    save_mixture(model, Mixture(np.array([0.4, 0.6]), np.array([[60.0, 80, 100], [180, 150, 120]]),
                                np.stack([np.eye(3) * 90, np.eye(3) * 40])), {})
    outputs = {}
    for name, where in (("real", ["--scheduler", real_cluster]),
                        ("embedded", ["--scheduler", "", "--dashboard-address", "127.0.0.1:0"])):
        outputs[name] = tmp_path / f"{name}.png"
        status = run_sample("--model", model, "--shape", "300x520", "--chunk-size", "256", "--out", outputs[name],
                            *where)
        assert status == 0, capsys.readouterr().err
    assert outputs["real"].read_bytes() == outputs["embedded"].read_bytes()


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
