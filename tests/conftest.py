"""Shared fixtures: one real Dask cluster for the whole session, test images, and job runners.

The cluster is a ``distributed.LocalCluster`` with two worker processes on 127.0.0.1. Library tests use
it through the ``client`` fixture (the default client while it lives); in-process job runs reach it with
``--scheduler <scheduler_address>`` so that they do not start clusters of their own. Only the few
end-to-end tests that run ``python -m jobs.compress`` as a subprocess start an embedded cluster.

Images are made by the tests: scikit-learn's sample photos, downscaled copies of them, and synthetic
arrays. Nothing is read from data folders and nothing is copied into the repository.
"""

import compileall
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

# Small copies of the photos for job-level tests that are not about equivalence with scikit-learn.
SMALL_SIZE = (160, 107)  # (width, height) for Pillow



def pytest_sessionstart(session):
    """Compile the checkout's modules to bytecode once. Where PYTHONDONTWRITEBYTECODE is set (as in some CI images),
    every job subprocess and worker process of the session would otherwise compile mixlib's source again (about
    0.1 s each); Python still reads the bytecode it finds."""
    if sys.dont_write_bytecode:
        for folder in ("mixlib", "jobs"):
            compileall.compile_dir(REPO / folder, quiet=1)


# ------------------------------------------------------------------------------------------ cluster

@pytest.fixture(scope="session")
def cluster():
    """A real two-process local cluster on 127.0.0.1 for the whole session."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as local:
        yield local


@pytest.fixture(scope="session")
def client(cluster):
    """A client of the session cluster; the default client while no other client is newer."""
    from distributed import Client

    with Client(cluster) as session_client:
        yield session_client


@pytest.fixture(scope="session")
def scheduler_address(cluster):
    return cluster.scheduler_address


@pytest.fixture(scope="session")
def one_worker_address():
    """A second, separate cluster with a single worker process (results must not depend on workers)."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as local:
        yield local.scheduler_address


@pytest.fixture
def free_port():
    """A TCP port on 127.0.0.1 that nobody listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------- images

def _sample(name):
    from sklearn.datasets import load_sample_image

    image = load_sample_image(name)
    image.setflags(write=False)
    return image


@pytest.fixture(scope="session")
def china():
    """scikit-learn's china.jpg as (427, 640, 3) uint8 (read-only)."""
    return _sample("china.jpg")


@pytest.fixture(scope="session")
def flower():
    """scikit-learn's flower.jpg as (427, 640, 3) uint8 (read-only)."""
    return _sample("flower.jpg")


def downscale(image, size=SMALL_SIZE):
    from PIL import Image

    return np.asarray(Image.fromarray(np.asarray(image)).resize(size, Image.Resampling.BILINEAR))


@pytest.fixture(scope="session")
def small_china(china):
    """china.jpg downscaled to 160x107 pixels (many distinct colours, fast to fit)."""
    small = downscale(china)
    small.setflags(write=False)
    return small


def save_png(path, pixels):
    """Write an (H, W, 3|4) uint8 array as an RGB(A) PNG with Pillow; return the path."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(pixels)).save(path)
    return path


def read_png(path):
    """``(labels (H, W), palette (p, 3|4) uint8, mode, pixels as RGB(A))`` of a palette PNG output.

    The palette has an alpha column when the file has transparency (PNG's tRNS chunk)."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        mode = im.mode
        labels = np.asarray(im)
        transparency = im.info.get("transparency")
        palette = None
        if mode == "P":
            palette = np.asarray(im.getpalette("RGB"), dtype=np.uint8).reshape(-1, 3)
            if transparency is not None:
                alpha = np.full(len(palette), 255, dtype=np.uint8)
                if isinstance(transparency, bytes):
                    given = np.frombuffer(transparency, dtype=np.uint8)[:len(palette)]
                    alpha[:len(given)] = given
                else:
                    alpha[transparency] = 0
                palette = np.column_stack([palette, alpha])
        converted = np.asarray(im.convert("RGBA" if transparency is not None else "RGB"))
    return labels, palette, mode, converted


@pytest.fixture
def small_china_png(tmp_path, small_china):
    return save_png(tmp_path / "inputs" / "china.png", small_china)


# --------------------------------------------------------------------------------------- job runners

@pytest.fixture(scope="session")
def empty_config(tmp_path_factory):
    """An empty TOML config: in-process runs use the settings' own defaults, not configs/compress.toml
    (which other people edit), unless a test passes --config itself."""
    path = tmp_path_factory.mktemp("config") / "empty.toml"
    path.write_text("# no keys: every setting at its default\n")
    return path


def in_process_runner(main, capsys, scheduler_address, empty_config):
    """``run(*argv)``: call a job's ``main(argv)`` in this process and return its exit status.

    Adds ``--scheduler <session cluster>`` and ``--config <empty file>`` unless the test gives them.
    Whatever was captured before is discarded, so ``capsys.readouterr().err`` afterwards is the run's stderr.
    """

    def run(*argv):
        argv = [str(a) for a in argv]
        if not any(a == "--scheduler" or a.startswith("--scheduler=") for a in argv):
            argv += ["--scheduler", scheduler_address]
        if not any(a == "--config" or a.startswith("--config=") for a in argv):
            argv += ["--config", str(empty_config)]
        capsys.readouterr()
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level
        try:
            return main(argv)
        finally:
            # The job points the root logger at the captured stderr; give the session its handlers back.
            root.handlers[:] = handlers
            root.setLevel(level)

    return run


@pytest.fixture
def run_job(capsys, scheduler_address, empty_config):
    """:func:`in_process_runner` for ``jobs.compress``."""
    import jobs.compress

    return in_process_runner(jobs.compress.main, capsys, scheduler_address, empty_config)


def cli_command(*argv, module="jobs.compress", env=None):
    """``(command, environment)`` of ``python -m MODULE ARGV`` with this checkout importable."""
    environment = dict(os.environ)
    environment.pop("DASK_SCHEDULER_ADDRESS", None)
    environment.update(env or {})
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), environment.get("PYTHONPATH", "")]))
    return [sys.executable, "-m", module, *map(str, argv)], environment


def run_cli(*argv, cwd, env=None, timeout=600, module="jobs.compress"):
    """Run ``python -m MODULE ARGV`` in a subprocess; return the CompletedProcess (text output)."""
    command, environment = cli_command(*argv, module=module, env=env)
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def cli():
    """The subprocess runner :func:`run_cli` as a fixture."""
    return run_cli


@pytest.fixture
def run_sample(capsys, scheduler_address, empty_config):
    """:func:`in_process_runner` for ``jobs.sample``."""
    import jobs.sample

    return in_process_runner(jobs.sample.main, capsys, scheduler_address, empty_config)


@pytest.fixture
def run_recommend(capsys, scheduler_address, empty_config):
    """:func:`in_process_runner` for ``jobs.recommend`` (the first argument is the command)."""
    import jobs.recommend

    return in_process_runner(jobs.recommend.main, capsys, scheduler_address, empty_config)


@pytest.fixture
def outdir(tmp_path):
    """An empty output folder of its own (so that a test can check nothing was left in it)."""
    folder = tmp_path / "out"
    folder.mkdir()
    return folder
