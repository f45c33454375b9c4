"""python -m jobs.recommend: training, publishing, the guardrail, warm starts, resuming, serving and bad input.

Outputs are checked against brute-force numpy computed from the published Zarr arrays, read with zarr itself.
"""

import json
import signal
import subprocess
import time

import numpy as np
import pytest
import zarr
from conftest import REPO, cli_command

from mixlib import __version__
from mixlib.core import checkpoint
from mixlib.recsys import settings, train
from mixlib.recsys.store import ModelStore, rows_of, top_unseen

SIGMA = 0.4


def synthetic(seed=0, n_users=300, n_items=120, rank=3, density=0.3, user_prefix="u"):
    """Rows (user id, item id, rating) of a noisy low-rank model with biases; user ids are strings."""
    rng = np.random.default_rng(seed)
    p, q = rng.normal(0, 0.6, (n_users, rank)), rng.normal(0, 0.6, (n_items, rank))
    b_u, b_i = rng.normal(0, 0.3, n_users), rng.normal(0, 0.3, n_items)
    users, items = np.nonzero(rng.random((n_users, n_items)) < density)
    ratings = 3.5 + b_u[users] + b_i[items] + np.einsum("nk,nk->n", p[users], q[items])
    ratings += rng.normal(0, SIGMA, len(users))
    return [(f"{user_prefix}{u:04d}", int(i) + 100, float(r)) for u, i, r in zip(users, items, ratings)]


def write_csv(path, rows, header=True):
    lines = (["user,item,rating"] if header else []) + [f"{u},{i},{r:.6f}" for u, i, r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def ratings_csv(tmp_path_factory):
    return write_csv(tmp_path_factory.mktemp("ratings") / "ratings.csv", synthetic())


FAST = ("--rank", 3, "--max-steps", 12, "--reg-lambda", 0.05, "--checkpoint-every", 0)


def one_error_line(stderr_lines):
    """The run ended with one ``error:`` line on stderr (after any log lines) and no traceback."""
    return (stderr_lines[-1].startswith("error: ") and sum(line.startswith("error") for line in stderr_lines) == 1
            and not any("Traceback" in line for line in stderr_lines))


def published(model_dir):
    """The published version's arrays and attributes, read with zarr directly."""
    name = (model_dir / "latest").read_text().strip()
    group = zarr.open_group(str(model_dir / "versions" / name), mode="r")
    arrays = {key: np.asarray(a[...].tolist() if a.dtype.kind == "T" else a[...]) for key, a in group.arrays()}
    return name, arrays, dict(group.attrs)["attrs"]


def brute_predict(arrays, attrs, user_ids, item_ids):
    """Predictions from the stored arrays, one pair at a time; unknown ids fall back to the biases."""
    users, items = [str(u) for u in arrays["user_ids"]], [str(i) for i in arrays["item_ids"]]
    out = []
    for user, item in zip(user_ids, item_ids):
        u = users.index(str(user)) if str(user) in users else None
        i = items.index(str(item)) if str(item) in items else None
        value = attrs["mu"]
        if u is not None:
            value += arrays["user_bias"][u] + arrays["user_means"][u]
        if i is not None:
            value += arrays["item_bias"][i]
        if u is not None and i is not None:
            value += arrays["user_factors"][u] @ arrays["item_factors"][i]
        out.append(value)
    return np.array(out)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, ratings_csv, scheduler_address, empty_config):
    """One ``train`` of the synthetic ratings for the tests below (so that a failure in one of ``predict``,
    ``recommend`` and ``evaluate`` hides none of the others): its folder, exit status and stderr."""
    import contextlib
    import io
    import logging
    import types

    import jobs.recommend

    folder = tmp_path_factory.mktemp("trained")
    argv = ["train", "--ratings", ratings_csv, "--model-dir", folder / "models", "--metrics", folder / "metrics.json",
            "--plots", folder / "plots", *FAST, "--scheduler", scheduler_address, "--config", empty_config]
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            status = jobs.recommend.main([str(a) for a in argv])
    finally:  # the job points the root logger at the captured stderr; give the session its handlers back
        root.handlers[:] = handlers
        root.setLevel(level)
    return types.SimpleNamespace(folder=folder, models=folder / "models", status=status, err=err.getvalue())


def test_train_publishes_a_model_with_its_metrics_and_plots(trained):
    assert trained.status == 0, trained.err
    assert "Iteration 1, Train Error: " in trained.err
    name, arrays, attrs = published(trained.models)
    assert name == "v0001" and attrs["metrics"]["published"]
    metrics = json.loads((trained.folder / "metrics.json").read_text())
    # ~36 ratings per user leave some estimation error on top of the noise (test_recsys_als checks the 5% bound).
    assert SIGMA * 0.9 < metrics["test"]["rmse"] < SIGMA * 1.15, metrics["test"]
    assert metrics["version"] == "v0001" and len(metrics["history"]) == metrics["steps"]
    from PIL import Image

    assert Image.open(trained.folder / "plots" / "loss-curves.png").size == (1000, 400)


def test_predict_known_and_unknown_pairs_equals_the_brute_force(run_recommend, trained, tmp_path, capsys):
    """Known and unknown users and items, never NaN."""
    assert trained.status == 0, trained.err
    _, arrays, attrs = published(trained.models)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("user,item\nu0003,101\nu0003,99999\nnobody,101\nnobody,5\nu0010,150\n")
    out = tmp_path / "predictions.csv"
    assert run_recommend("predict", "--model-dir", trained.models, "--pairs", pairs, "--out", out) == 0
    assert "2 with an unknown user, 2 with an unknown item" in capsys.readouterr().err
    lines = out.read_text().splitlines()
    assert lines[0] == "user,item,prediction"
    got = np.array([float(line.split(",")[2]) for line in lines[1:]])
    want = brute_predict(arrays, attrs, ["u0003", "u0003", "nobody", "nobody", "u0010"], [101, 99999, 101, 5, 150])
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert np.isfinite(got).all()


def test_recommend_ranks_unseen_items_as_the_brute_force(run_recommend, trained, tmp_path):
    """The top 5 unseen items of two users and an unknown one, in blocks of 2 users."""
    assert trained.status == 0, trained.err
    _, arrays, attrs = published(trained.models)
    users = tmp_path / "users.csv"
    users.write_text("user\nu0001\nu0002\nstranger\n")
    top = tmp_path / "top.csv"
    assert run_recommend("recommend", "--model-dir", trained.models, "--users", users, "--top", 5, "--out", top,
                         "--block-users", 2) == 0
    rows = [line.split(",") for line in top.read_text().splitlines()[1:]]
    seen = {(u, i) for u, i, _ in synthetic()}
    item_ids = arrays["item_ids"]
    for user in ("u0001", "u0002", "stranger"):
        scores = brute_predict(arrays, attrs, [user] * len(item_ids), item_ids)
        candidates = [(-s, int(i)) for s, i in zip(scores, item_ids) if (user, int(i)) not in seen]
        want = [i for _, i in sorted(candidates)[:5]]
        assert [int(r[2]) for r in rows if r[0] == user] == want
        assert [int(r[1]) for r in rows if r[0] == user] == [1, 2, 3, 4, 5]


def test_recommend_for_every_user_as_a_parquet_dataset_equals_the_csv(run_recommend, trained, tmp_path, capsys):
    """--out NAME.parquet: a folder of part files written by the blocks' tasks on the cluster (one per 64 users),
    holding the rows of the CSV that this process writes from the same blocks; an existing dataset needs
    --overwrite."""
    import pyarrow.parquet as pq

    assert trained.status == 0, trained.err
    csv_out, dataset = tmp_path / "top.csv", tmp_path / "top.parquet"
    common = ("recommend", "--model-dir", trained.models, "--top", 4, "--block-users", 64)
    assert run_recommend(*common, "--out", csv_out, "--scheduler", "") == 0
    assert run_recommend(*common, "--out", dataset) == 0
    assert "wrote 1200 recommendations in 5 part file(s)" in capsys.readouterr().err
    assert sorted(p.name for p in dataset.iterdir()) == [f"part-{n:05d}.parquet" for n in range(5)]
    table = pq.read_table(dataset)
    rows = [line.split(",") for line in csv_out.read_text().splitlines()[1:]]
    assert table.column("user").to_pylist() == [r[0] for r in rows]
    assert table.column("rank").to_pylist() == [int(r[1]) for r in rows]
    assert table.column("item").to_pylist() == [int(r[2]) for r in rows]
    np.testing.assert_allclose(table.column("score").to_numpy(), [float(r[3]) for r in rows], rtol=1e-5)
    assert run_recommend(*common, "--out", dataset) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert run_recommend(*common, "--out", dataset, "--overwrite", "--top", 2) == 0
    assert pq.read_table(dataset).num_rows == 600


def test_small_serving_jobs_run_here_with_the_cluster_s_results(run_recommend, trained, tmp_path, capsys):
    """predict always, and recommend and evaluate within one block of users, run in this process without a cluster
    (with no --scheduler): the same files as on the cluster."""
    assert trained.status == 0, trained.err
    users = tmp_path / "users.csv"
    users.write_text("user\nu0001\nu0002\nstranger\n")
    (tmp_path / "pairs.csv").write_text("u0001,3\nstranger,4\n")
    heldout = write_csv(tmp_path / "heldout.csv", synthetic(seed=7)[:300])  # another draw: pairs new to the model
    commands = {"predict": ("--pairs", tmp_path / "pairs.csv", "--out"),
                "recommend": ("--users", users, "--top", 5, "--out"),
                "evaluate": ("--ratings", heldout, "--top", 5, "--metrics")}
    for command, args in commands.items():
        files = {}
        for where, extra in (("cluster", ()), ("here", ("--scheduler", ""))):
            files[where] = tmp_path / f"{command}-{where}.{'json' if command == 'evaluate' else 'csv'}"
            assert run_recommend(command, "--model-dir", trained.models, *args, files[where], *extra) == 0
            assert ("without a cluster" in capsys.readouterr().err) == (where == "here")
        assert files["cluster"].read_bytes() == files["here"].read_bytes(), command


def test_evaluate_errors_equal_the_brute_force(run_recommend, trained, tmp_path):
    assert trained.status == 0, trained.err
    _, arrays, attrs = published(trained.models)
    rows50 = synthetic()[:50]
    heldout = write_csv(tmp_path / "heldout.csv", rows50)
    eval_metrics = tmp_path / "eval.json"
    assert run_recommend("evaluate", "--model-dir", trained.models, "--ratings", heldout, "--metrics",
                         eval_metrics) == 0
    result = json.loads(eval_metrics.read_text())
    residual = np.array([round(r, 6) for _, _, r in rows50]) - brute_predict(arrays, attrs, [u for u, _, _ in rows50],
                                                                             [i for _, i, _ in rows50])
    np.testing.assert_allclose(result["rmse"], np.sqrt(np.mean(residual ** 2)), rtol=1e-9)
    np.testing.assert_allclose(result["mae"], np.mean(np.abs(residual)), rtol=1e-9)
    # Held-out ratings from the training set are all in the model's input: none can be recommended, so nothing is
    # left to rank, which is bad input.
    assert run_recommend("evaluate", "--model-dir", trained.models, "--ratings", heldout, "--top", 5) == 2


def test_guardrail_refuses_a_worse_model_and_keeps_the_published_one(run_recommend, ratings_csv, tmp_path, capsys):
    """v0001 has seen 80% of the ratings; the models are compared on the validation ratings it did not see."""
    models = tmp_path / "models"
    earlier = [row for n, row in enumerate(synthetic()) if n % 5]
    assert run_recommend("train", "--ratings", write_csv(tmp_path / "earlier.csv", earlier), "--model-dir", models,
                         *FAST) == 0
    metrics = tmp_path / "refused.json"
    status = run_recommend("train", "--ratings", ratings_csv, "--model-dir", models, *FAST, "--reg-lambda", 50,
                           "--max-steps", 1, "--guardrail-tolerance", 0.0, "--metrics", metrics)
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 3
    assert err[-1].startswith("error: not published: validation RMSE") and "v0001 stays published" in err[-1]
    assert "of the published model (v0001) on the" in err[-1] and "validation ratings it never saw" in err[-1]
    assert (models / "latest").read_text().strip() == "v0001"
    assert sorted(p.name for p in (models / "versions").iterdir()) == ["v0001"]
    result = json.loads(metrics.read_text())
    assert not result["published"]
    assert result["guardrail"]["validation_rmse"] > result["guardrail"]["published_validation_rmse"]
    # A model no worse than the published one by more than the tolerance is published.
    assert run_recommend("train", "--ratings", ratings_csv, "--model-dir", models, *FAST,
                         "--guardrail-tolerance", 0.05) == 0
    assert (models / "latest").read_text().strip() == "v0002"


def test_warm_start_maps_known_ids_and_starts_closer(run_recommend, tmp_path, capsys):
    everything = synthetic(seed=3)
    first = [row for row in everything if row[1] % 3]  # two thirds of the items
    models = tmp_path / "models"
    assert run_recommend("train", "--ratings", write_csv(tmp_path / "a.csv", first), "--model-dir", models,
                         *FAST) == 0
    _, old, _ = published(models)
    store = ModelStore(models)
    plan_settings = settings.TrainSettings(ratings=str(write_csv(tmp_path / "b.csv", everything)),
                                            model_dir=str(models), rank=3, warm_start=True)
    job_plan = train.plan_train(plan_settings)
    item_factors, item_bias = train._known_items(store.load(), job_plan.prepared)
    for index, item in enumerate(job_plan.prepared.item_ids):
        where = np.flatnonzero(old["item_ids"] == item)
        if item % 3:
            np.testing.assert_array_equal(item_factors[index], old["item_factors"][where[0]])
            assert item_bias[index] == old["item_bias"][where[0]]
        else:
            assert not len(where) and np.isnan(item_factors[index]).all() and np.isnan(item_bias[index])
    first_rmse = {}
    for flag in ("--warm-start", "--no-warm-start"):
        metrics = tmp_path / f"{flag}.json"
        assert run_recommend("train", "--ratings", tmp_path / "b.csv", "--model-dir", tmp_path / flag, *FAST,
                             "--max-steps", 1, "--metrics", metrics, *(("--model-dir", models) if flag ==
                                                                        "--warm-start" else ()), flag) == 0
        first_rmse[flag] = json.loads(metrics.read_text())["history"][0][3]
    assert first_rmse["--warm-start"] < first_rmse["--no-warm-start"]


def test_resume_after_sigkill_ends_with_the_factors_of_an_uninterrupted_run(tmp_path):
    """A real training process killed with SIGKILL after some checkpoints; --resume finishes the same model."""
    ratings = write_csv(tmp_path / "ratings.csv", synthetic(seed=5, n_users=1500, n_items=400, rank=8))
    common = ("train", "--ratings", ratings, "--rank", 16, "--max-steps", 40, "--patience", 40,
              "--checkpoint-every", 1, "--dashboard-address", "127.0.0.1:0", "--config", tmp_path / "empty.toml")
    (tmp_path / "empty.toml").write_text("")
    whole = tmp_path / "whole"
    command, env = cli_command(*common, "--model-dir", whole, module="jobs.recommend")
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr

    killed = tmp_path / "killed"
    command, env = cli_command(*common, "--model-dir", killed, module="jobs.recommend")
    process = subprocess.Popen(command, env=env, cwd=REPO, stderr=subprocess.PIPE, text=True)
    pointer = killed / "checkpoint" / "LATEST"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if pointer.exists() and int(pointer.read_text().split("-")[1]) >= 5:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    step = int(pointer.read_text().split("-")[1])
    assert 5 <= step < 40 and not (killed / "latest").exists()

    command, env = cli_command(*common, "--model-dir", killed, "--resume", module="jobs.recommend")
    resumed = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from the checkpoint of step {step}" in resumed.stderr
    _, a, attrs_a = published(whole)
    _, b, attrs_b = published(killed)
    for key in ("user_factors", "item_factors", "user_bias", "item_bias"):
        np.testing.assert_array_equal(a[key], b[key])
    assert attrs_a["metrics"]["history"] == attrs_b["metrics"]["history"]
    assert not (killed / "checkpoint").exists()  # a finished run leaves no checkpoint behind


def test_resume_refuses_a_checkpoint_of_another_config(run_recommend, ratings_csv, tmp_path, capsys):
    folder = tmp_path / "models" / "checkpoint"
    saved = checkpoint.BlockCheckpoint(folder, "another fingerprint", "another config or other ratings")
    saved.start(resume=False)
    saved.save_latest("step-000003", {"history": np.zeros((0, 4))}, {"scalars": {"step": 3}})
    status = run_recommend("train", "--ratings", ratings_csv, "--model-dir", tmp_path / "models", *FAST, "--resume")
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and one_error_line(err)
    assert "was made from another config or other ratings" in err[-1]


def test_non_finite_factors_stop_the_job_with_one_line_and_status_1(run_recommend, tmp_path, capsys, monkeypatch):
    """(test_als checks that non-finite factors are detected; here, what the job makes of it.)"""
    from mixlib.recsys import als

    monkeypatch.setattr(als._Sides, "sums", lambda self, users, items: ({"nonfinite": 1}, {"nonfinite": 0}))
    ratings = write_csv(tmp_path / "r.csv", synthetic(seed=13, n_users=60, n_items=40))
    status = run_recommend("train", "--ratings", ratings, "--model-dir", tmp_path / "m", "--rank", 3)
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and one_error_line(err) and "ALS step 1: the factors are not finite" in err[-1], err
    assert not (tmp_path / "m" / "latest").exists()


def test_the_seed_config_runs_its_preprocessing(run_recommend, tmp_path, capsys):
    ratings = write_csv(tmp_path / "r.csv", synthetic(seed=6, n_users=200, n_items=150, density=0.25))
    models = tmp_path / "m"
    status = run_recommend("train", "--config", REPO / "configs" / "recommender-seed.toml", "--ratings", ratings,
                           "--model-dir", models, "--max-steps", 2, "--rank", 10, "--force-publish")
    err = capsys.readouterr().err
    assert status == 0, err
    assert "split: " in err and ", 200 validation, 200 test ratings" in err and "cold-start filter" in err
    _, arrays, attrs = published(models)
    assert not arrays["user_bias"].any() and not arrays["item_bias"].any() and attrs["mu"] == 0
    assert arrays["user_means"].min() > 2  # the user-mean shift is kept in the model


def recommend_commands():
    import jobs.recommend

    return jobs.recommend.COMMANDS


BAD = [
    (("train",), "give the ratings to train on"),
    (("train", "--ratings", "{tmp}/missing.csv"), "does not exist"),
    (("train", "--ratings", "{bad_rows}"), "1 row(s) with a missing or non-finite id or rating, the first at row 3"),
    (("train", "--ratings", "{ratings}", "--rank", 500, "--init", "random"), "exceeds"),
    (("train", "--ratings", "{ratings}", "--rank", 120), "needs more than 120 users and items for the SVD init"),
    (("train", "--ratings", "{ratings}", "--log-every", 3, "--eval-every", 2), "multiple of --eval-every"),
    (("train", "--ratings", "{ratings}", "--checkpoint-dir", "{ratings}/sub"), "cannot write to --checkpoint-dir"),
    (("train", "--ratings", "{ratings}", "--metrics", "{ratings}"), "unknown format"),
    (("train", "--ratings", "{ratings}", "--min-entries", 10000), "removed every rating"),
    (("train", "--ratings", "{ratings}", "--validation", 2.5), "whole number"),
    (("predict", "--pairs", "{tmp}/pairs.csv", "--out", "{tmp}/p.csv"), "no published model"),
    (("recommend", "--out", "{tmp}/top.csv", "--top", 0), "at least 1"),
    (("evaluate",), "needs --ratings"),
    (("tune",), "unknown command 'tune'"),
]


@pytest.mark.parametrize("argv, message", BAD)
def test_bad_input_is_one_line_and_exit_status_2(run_recommend, ratings_csv, tmp_path, capsys, argv, message):
    bad_rows = tmp_path / "bad.csv"
    bad_rows.write_text("user,item,rating\nu1,1,3\nu2,,4\nu3,2,5\n")
    (tmp_path / "pairs.csv").write_text("u1,1\n")
    fill = {"tmp": tmp_path, "bad_rows": bad_rows, "ratings": ratings_csv}
    argv = [str(a).format(**fill) for a in argv]
    extra = ("--model-dir", tmp_path / "models") + (FAST[2:4] if argv[0] == "train" else ())
    status = run_recommend(*argv, *(extra if argv[0] in recommend_commands() else ()))
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert one_error_line(err) and message in err[-1], err
    assert not (tmp_path / "models" / "latest").exists() and not list(tmp_path.glob("*.json"))


@pytest.mark.parametrize("ratings", ["{tmp}/missing.csv", "{tmp}/dataset"])
def test_bad_ratings_leave_no_model_folder(run_recommend, tmp_path, capsys, ratings):
    """A missing file or a folder as --ratings: exit 2 and no --model-dir (nor its new parents) left behind."""
    (tmp_path / "dataset").mkdir()
    status = run_recommend("train", "--ratings", ratings.format(tmp=tmp_path), "--model-dir",
                           tmp_path / "new" / "models", *FAST)
    assert status == 2 and one_error_line(capsys.readouterr().err.strip().splitlines())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset"]


def test_a_refused_first_model_leaves_no_model_folder(run_recommend, tmp_path, capsys):
    """Exit 3 on a fresh store: no empty --model-dir; a store that existed before stays."""
    from test_recsys_recommend_inputs import noisy_ratings

    ratings = write_csv(tmp_path / "r.csv", noisy_ratings())
    seed = ("--config", REPO / "configs" / "recommender-seed.toml", "--max-steps", 10)
    status = run_recommend("train", "--ratings", ratings, "--model-dir", tmp_path / "new" / "models", *seed)
    assert status == 3 and one_error_line(capsys.readouterr().err.strip().splitlines())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv"]
    (tmp_path / "kept").mkdir()
    assert run_recommend("train", "--ratings", ratings, "--model-dir", tmp_path / "kept", *seed) == 3
    assert (tmp_path / "kept").is_dir() and not any((tmp_path / "kept").iterdir())


def test_version_without_a_command(capsys):
    import jobs.recommend

    assert jobs.recommend.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"mixlib {__version__}"


# ------------------------------------------------------------------------------------- the pieces

def test_top_unseen_against_brute_force():
    rng = np.random.default_rng(0)
    users, items = rng.normal(size=(7, 3)), rng.normal(size=(30, 3))
    bias = rng.normal(size=30)
    seen = [rng.choice(30, size=n, replace=False) for n in (0, 3, 29, 30, 5, 1, 10)]
    indptr = np.append(0, np.cumsum([len(s) for s in seen]))
    got_items, got_scores = top_unseen(users, indptr, np.concatenate(seen), items, bias, 4)
    for u in range(7):
        scores = items @ users[u] + bias
        want = [i for i in np.argsort(-scores, kind="stable") if i not in seen[u]][:4]
        assert list(got_items[u][got_items[u] >= 0]) == want
        np.testing.assert_allclose(got_scores[u][: len(want)], scores[want])
        assert (got_items[u][len(want):] == -1).all() and np.isnan(got_scores[u][len(want):]).all()


@pytest.mark.parametrize("top", [3, 9, 40])
def test_top_unseen_breaks_ties_by_item_index(top):
    """Items of equal score (identical factors, as items rated alike end up) are listed lowest index first, and
    when the ties straddle the cut the lowest indices are taken: the lists do not depend on how the selection
    partitions a row (it does not, with the tied items moved around in the row)."""
    rng = np.random.default_rng(top)
    levels = rng.normal(size=(5, 2))
    items = levels[rng.integers(0, 5, 60)]  # 60 items, 5 distinct factor rows: ties everywhere
    users = rng.normal(size=(6, 2))
    seen = [rng.choice(60, size=n, replace=False) for n in (0, 7, 59, 12, 0, 30)]
    indptr = np.append(0, np.cumsum([len(s) for s in seen]))
    got_items, _ = top_unseen(users, indptr, np.concatenate(seen), items, np.zeros(60), top)
    for u in range(6):
        scores = items @ users[u]
        want = [i for i in np.lexsort((np.arange(60), -scores)) if i not in seen[u]][:top]
        assert list(got_items[u][got_items[u] >= 0]) == want


def test_rows_of_gathers_csr_rows():
    indptr, indices = np.array([0, 2, 2, 5, 6]), np.array([4, 1, 0, 2, 3, 9])
    sub_indptr, sub_indices = rows_of(indptr, indices, np.array([2, -1, 0, 3]))
    assert list(sub_indptr) == [0, 3, 3, 5, 6] and list(sub_indices) == [0, 2, 3, 4, 1, 9]


def test_predict_over_a_dataset_of_pairs_writes_a_dataset_equal_to_one_file(run_recommend, trained, tmp_path, capsys):
    """--pairs FOLDER: each part (CSV or Parquet) read, predicted and written by a task of the cluster, one output
    part per input part; the rows equal the brute force and the CSV of the same pairs in one file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    assert trained.status == 0, trained.err
    _, arrays, attrs = published(trained.models)
    users = ["u0003", "u0003", "nobody", "nobody", "u0010", "u0020", "u0007"]
    items = ["101", "99999", "101", "5", "150", "102", "103"]
    folder = tmp_path / "pairs"
    folder.mkdir()
    (folder / "a.csv").write_text("user,item\n" + "".join(f"{u},{i}\n" for u, i in zip(users[:3], items[:3])))
    pq.write_table(pa.table({"user": users[3:5], "item": [int(i) for i in items[3:5]]}), folder / "b.parquet")
    (folder / "c.csv").write_text("user,item\n" + "".join(f"{u},{i}\n" for u, i in zip(users[5:], items[5:])))
    one = tmp_path / "pairs.csv"
    one.write_text("user,item\n" + "".join(f"{u},{i}\n" for u, i in zip(users, items)))
    dataset, from_one, from_folder = tmp_path / "p.parquet", tmp_path / "one.csv", tmp_path / "folder.csv"
    assert run_recommend("predict", "--model-dir", trained.models, "--pairs", folder, "--out", dataset) == 0
    assert "7 pairs: 2 with an unknown user, 2 with an unknown item" in capsys.readouterr().err
    assert sorted(p.name for p in dataset.iterdir()) == [f"part-{n:05d}.parquet" for n in range(3)]
    table = pq.read_table(dataset)
    assert table.column("user").to_pylist() == users and table.column("item").to_pylist() == items
    want = brute_predict(arrays, attrs, users, [int(i) for i in items])
    np.testing.assert_allclose(table.column("prediction").to_numpy(), want, rtol=1e-9)
    assert run_recommend("predict", "--model-dir", trained.models, "--pairs", one, "--out", from_one) == 0
    assert run_recommend("predict", "--model-dir", trained.models, "--pairs", folder, "--out", from_folder) == 0
    assert from_folder.read_text() == from_one.read_text()


def test_evaluate_on_a_dataset_equals_one_file(run_recommend, trained, tmp_path):
    """--ratings FOLDER: the parts read and rid of repeated pairs (across files, the last winning) on the workers
    and summed by shard, the relevant pairs cut by range of users and ranked by range (ranges of 32 users with
    --block-users 2); the metrics equal those of the same held-out ratings in one file (evaluated in this
    process), pairs the model saw left out of the ranking."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    assert trained.status == 0, trained.err
    rows = synthetic(seed=5, density=0.05)
    rows += [("stranger", 101, 5.0), ("u0001", 99999, 4.0), (rows[0][0], rows[0][1], 1.0)]  # a repeat, last wins
    one = write_csv(tmp_path / "heldout.csv", rows)
    folder = tmp_path / "heldout"
    folder.mkdir()
    third = len(rows) // 3
    write_csv(folder / "a.csv", rows[:third])
    pq.write_table(pa.table({"user": [r[0] for r in rows[third:2 * third]],
                             "item": [r[1] for r in rows[third:2 * third]],
                             "rating": [round(r[2], 6) for r in rows[third:2 * third]]}), folder / "b.parquet")
    write_csv(folder / "c.csv", rows[2 * third:])
    results = []
    for ratings, extra in ((one, ("--scheduler", "")), (folder, ())):
        out = tmp_path / f"{ratings.name}.json"
        assert run_recommend("evaluate", "--model-dir", trained.models, "--ratings", ratings, "--top", 5,
                             "--block-users", 2, "--metrics", out, *extra) == 0
        results.append(json.loads(out.read_text()))
    here, there = results
    assert here.keys() == there.keys() and here["ratings"] == len(rows) - 1 and here["users_ranked"] > 32
    assert (here["unknown_users"], here["unknown_items"]) == (1, 1)
    for key, value in here.items():
        if isinstance(value, float):
            np.testing.assert_allclose(there[key], value, rtol=1e-9, err_msg=key)
        else:
            assert there[key] == value, key
