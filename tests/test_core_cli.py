"""What every command shares: --help in sections, --version, shipped configs, quiet dashboard ports, and an
installed wheel that runs a job from another folder."""

import os
import re
import socket
import subprocess
import sys
import venv

import pytest
from conftest import REPO, read_png


@pytest.mark.parametrize("module,argv", [("jobs.compress", []), ("jobs.sample", []),
                                         ("jobs.recommend", ["train"])])
def test_help_lists_inputs_and_model_before_the_cluster(cli, tmp_path, module, argv):
    helped = cli(*argv, "--help", cwd=tmp_path, module=module)
    assert helped.returncode == 0, helped.stderr
    text = helped.stdout
    sections = [text.index(f"\n{name}:\n") for name in ("input and output", "model", "cluster")]
    assert sections == sorted(sections), text
    usage = text.split("\n\n")[0]
    assert usage.index("--scheduler") > usage.index("--seed"), usage  # the cluster keys come last
    versioned = cli(*argv, "--version", cwd=tmp_path, module=module)
    assert versioned.returncode == 0 and re.fullmatch(r"mixlib \d+\.\d+\.\d+\S*\n", versioned.stdout)


def test_a_shipped_config_by_name(tmp_path):
    from mixlib.core.cli import config_file

    assert config_file("recommender-seed").read_text() == (REPO / "configs" / "recommender-seed.toml").read_text()
    assert str(config_file("my.toml")) == "my.toml"  # a path stays a path


def test_a_taken_dashboard_port_is_one_info_line(cli, tmp_path, small_china_png):
    """Another job's dashboard on the port: no raw warning from distributed, even at --log-level warning."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for level in ("warning", "info"):
            done = cli(small_china_png, "--out", tmp_path / f"{level}.png", "--dashboard-address",
                       f"127.0.0.1:{port}", "--log-level", level, "--local-pixels", 0, cwd=tmp_path)
            assert done.returncode == 0, done.stderr
            assert "Warning" not in done.stderr and "already in use" not in done.stderr, done.stderr
    assert f"(port {port} was taken)" in done.stderr


def test_a_wheel_install_runs_the_default_job_from_another_folder(tmp_path):
    """``pip install .`` as a cluster image does: the wheel carries the default configs and the loops compiled
    ahead of time, and the default job runs from a folder that is not the checkout (the dependencies come from
    this environment; the build's, numba among them, from the registry)."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(wheels), str(REPO)], check=True, capture_output=True, cwd=tmp_path)
    env_dir = tmp_path / "env"
    venv.create(env_dir, system_site_packages=True, with_pip=False)
    python = env_dir / "bin" / "python"
    # --ignore-installed: the venv sees this environment's mixlib (an editable install) and would keep it.
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--ignore-installed",
                    "-q", *map(str, wheels.glob("mixlib-*.whl"))], check=True, capture_output=True)
    work = tmp_path / "work"
    work.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    where = subprocess.run([python, "-c", "import mixlib, jobs; print(mixlib.__file__, jobs.__file__)"],
                           capture_output=True, text=True, cwd=work, check=True, env=env).stdout
    assert str(REPO) not in where and str(env_dir) in where, where  # the wheel, not the checkout
    built = subprocess.run([python, "-c", "from mixlib.fit.loops import LOOPS as f; from mixlib.image.loops import "
                            "LOOPS as i; print(f.compiled().__file__, i.compiled().__file__)"],
                           capture_output=True, text=True, cwd=work, check=True, env=env).stdout
    assert built.count(str(env_dir)) == 2, built
    done = subprocess.run([python, "-m", "jobs.compress", "--dashboard-address", "127.0.0.1:0"], capture_output=True,
                          text=True, cwd=work, timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    labels, palette, mode, _ = read_png(work / "outputs" / "compress" / "china-k16.png")
    assert mode == "P" and labels.shape == (427, 640) and len(palette) == 16
