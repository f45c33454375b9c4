"""The job's process of a `train` on a dataset holds per-user and per-item arrays, never the ratings nor the
factors: on real `dask scheduler` / `dask worker` processes, ten times the ratings over the same users and items
leave its peak memory where it was, and ten times the users add their ids and means, not their factors. The peak
is the job process's own high-water mark of resident memory, the workers being other processes."""

import os
import subprocess
import sys

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_jobs_real_cluster import dask_cluster, with_two_workers

N_USERS, N_ITEMS = 20_000, 10_000


def write_dataset(folder, n_ratings, files=4, seed=0, n_users=N_USERS, n_items=N_ITEMS):
    """Power-law ratings of every one of ``n_users`` users and ``n_items`` items, as ``files`` Parquet parts."""
    rng = np.random.default_rng(seed)
    extra = n_ratings - n_users
    users = np.concatenate([np.arange(n_users), rng.integers(0, n_users, extra)])
    items = np.concatenate([np.arange(n_users) % n_items, (rng.pareto(1.0, extra) * 20).astype(np.int64) % n_items])
    values = rng.integers(1, 6, n_ratings).astype(np.float32)
    folder.mkdir()
    for number, rows in enumerate(np.array_split(rng.permutation(n_ratings), files)):
        pq.write_table(pa.table({"user": users[rows], "item": items[rows], "rating": values[rows]}),
                       folder / f"part-{number}.parquet")
    return folder


def peak_rss_mib(argv, cwd, log):
    """Run ``argv``; its exit status and its peak resident set in MiB: the high-water mark of the program's own
    memory (``VmHWM``, which starts again at ``exec``; ``ru_maxrss`` would count the pages of this process, which
    it was forked from), read every 20 ms until it ends."""
    import time

    peak = 0
    with open(log, "w") as err:
        process = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err)
        while process.poll() is None:
            try:
                status = Path(f"/proc/{process.pid}/status").read_text()
            except OSError:
                break
            if "VmHWM:" in status:  # not in the status of a process that is ending
                peak = max(peak, int(status.split("VmHWM:")[1].split()[0]))
            time.sleep(0.02)
        process.wait()
    return process.returncode, peak / 1024


@pytest.fixture(scope="module")
def roomy_cluster():
    """A real cluster of two worker processes with 4 GiB each, shared by the tests of this module (what they
    measure is the job's process, not the workers)."""
    with dask_cluster("tcp", workers=2, worker_options=("--memory-limit", "4GiB")) as address:
        yield address


def train_peaks(tmp_path, folders, rank, address):
    """``{name: peak RSS in MiB}`` of `train` on each dataset folder of ``folders`` (name -> folder), on the real
    cluster of two worker processes at ``address``."""
    peaks = {}
    address = with_two_workers(address)
    for name, folder in folders.items():
        argv = [sys.executable, "-m", "jobs.recommend", "train", "--ratings", str(folder), "--model-dir",
                str(tmp_path / f"models-{name}"), "--scheduler", address, "--rank", str(rank), "--max-steps",
                "2", "--init", "random", "--no-refit", "--min-entries", "0", "--checkpoint-every", "0",
                "--force-publish"]  # random ratings: the baseline is as good
        status, peaks[name] = peak_rss_mib(argv, os.getcwd(), tmp_path / f"{name}.log")
        assert status == 0, (tmp_path / f"{name}.log").read_text()[-2000:]
    return peaks


def test_the_job_process_does_not_grow_with_the_ratings(tmp_path, roomy_cluster):
    peaks = train_peaks(tmp_path, {"small": write_dataset(tmp_path / "small", 400_000),
                                   "large": write_dataset(tmp_path / "large", 4_000_000)}, rank=8,
                        address=roomy_cluster)
    # 1.5 million more ratings once the repeated pairs are gone (0.35 and 1.86 million): the version that gathered
    # them (user, item, value, time, part, row numbers and the model's pattern) peaked 135 MiB higher here.
    assert peaks["large"] - peaks["small"] < 40, peaks


def test_the_job_process_holds_no_user_factors(tmp_path, roomy_cluster):
    """200,000 users instead of 20,000 at rank 64: their factors, 88 MiB more per copy, stay on the workers (the
    loop's current and best ones, the model judged and published); the job's process grows by their ids, means,
    counts and pattern pointers (about 40 bytes a user, 7 MiB) and what goes with them."""
    few = write_dataset(tmp_path / "few", 1_000_000, n_users=20_000)
    many = write_dataset(tmp_path / "many", 1_000_000, n_users=200_000)
    peaks = train_peaks(tmp_path, {"few": few, "many": many}, rank=64, address=roomy_cluster)
    assert peaks["many"] - peaks["few"] < 60, peaks
