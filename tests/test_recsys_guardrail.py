"""The guardrail against a published model compares both models on the validation ratings that model never saw.

A published model scores well on ratings it was trained on, so comparing it on this run's validation ratings that
were in its input favoured it and refused honest retraining (issue 14, item 1). References: the seen pairs as a
Python set of (user id, item id) built from the stored arrays, and predictions computed one pair at a time from
the stored factors (:func:`test_recsys_recommend_job.brute_predict`).
"""

import json

import numpy as np
import pytest
from test_recsys_recommend_job import FAST, brute_predict, published, synthetic, write_csv

from mixlib.recsys import train
from mixlib.recsys.als import Factors
from mixlib.recsys.ratings import read_ratings
from mixlib.recsys.shards import published_pairs
from mixlib.recsys.store import Model


def seen_pairs(arrays):
    """Every (user id, item id) in a stored model's seen pattern, as strings."""
    indptr, indices = arrays["seen_indptr"], arrays["seen_indices"]
    return {(str(arrays["user_ids"][u]), str(arrays["item_ids"][indices[k]]))
            for u in range(len(indptr) - 1) for k in range(indptr[u], indptr[u + 1])}


def model_with_seen(user_ids, item_ids, pairs):
    """A rank-1 Model whose seen pattern holds ``pairs`` (user index, item index)."""
    import scipy.sparse as sp

    users, items = (np.array([p[n] for p in pairs], dtype=np.int64) for n in (0, 1))
    seen = sp.csr_matrix((np.ones(len(pairs)), (users, items)), shape=(len(user_ids), len(item_ids)))
    indices = seen.indices.copy()
    for start, end in zip(seen.indptr[:-1], seen.indptr[1:]):  # any order within a row
        indices[start:end] = indices[start:end][::-1]
    factors = Factors(np.ones((len(user_ids), 1)), np.zeros(len(user_ids)), np.ones((len(item_ids), 1)),
                      np.zeros(len(item_ids)))
    return Model(factors, 3.0, np.zeros(len(user_ids)), np.array(user_ids), np.array(item_ids), seen.indptr, indices,
                 {}, {"version": "v0001"})


@pytest.mark.parametrize("seed", range(4))
def test_published_pairs_against_brute_force(seed):
    """Ids the published model lacks (users, items or both), pairs of known ids it saw or not, in any order."""
    rng = np.random.default_rng(seed)
    old_users = sorted(f"u{n:03d}" for n in rng.choice(60, 40, replace=False))
    old_items = sorted(int(n) for n in rng.choice(50, 30, replace=False))
    old_pairs = {(int(u), int(i)) for u, i in zip(rng.integers(0, 40, 500), rng.integers(0, 30, 500))}
    old = model_with_seen(old_users, old_items, sorted(old_pairs))
    new_users, new_items = np.array(sorted(f"u{n:03d}" for n in range(60))), np.arange(50)
    users, items = rng.integers(0, 60, 800), rng.integers(0, 50, 800)
    rows = np.sort(rng.choice(800, 300, replace=False))
    part = np.zeros(800, dtype=np.int8)
    part[rows] = 1  # the validation ratings
    shard = {"users": users, "items": items, "values": rng.random(800), "part": part}
    seen = {(old_users[u], old_items[i]) for u, i in old_pairs}
    want = [r for r in rows if (new_users[users[r]], int(new_items[items[r]])) not in seen]
    got, _, _ = published_pairs(shard, old, old.user_index(new_users), old.item_index(new_items), -np.inf, False)
    assert list(got) == want and 0 < len(want) < len(rows)
    # Model.has_seen, its kernel, on indices (-1: unknown).
    u, i = old.user_index(new_users[users[rows]]), old.item_index(new_items[items[rows]])
    assert list(old.has_seen(u, i)) == [(new_users[users[r]], int(new_items[items[r]])) in seen for r in rows]


@pytest.fixture(scope="module")
def day_files(tmp_path_factory):
    """Yesterday's export (90% of the ratings) and today's (all of them)."""
    folder = tmp_path_factory.mktemp("days")
    rows = synthetic(seed=21)
    yesterday = np.random.default_rng(0).random(len(rows)) < 0.9
    return (write_csv(folder / "day1.csv", [r for r, keep in zip(rows, yesterday) if keep]),
            write_csv(folder / "day2.csv", rows))


def clipped_rmse(arrays, attrs, triples):
    """RMSE of a stored model on (user, item, rating) triples, predictions clipped to its training range."""
    predicted = np.clip(brute_predict(arrays, attrs, [t[0] for t in triples], [t[1] for t in triples]),
                        *attrs["rating_range"])
    return float(np.sqrt(np.mean((np.array([t[2] for t in triples]) - predicted) ** 2)))


def test_a_model_trained_on_the_validation_ratings_is_not_favoured(run_recommend, day_files, tmp_path):
    """v0001 interpolates yesterday's ratings (rank 20, almost no regularisation, no held-out ratings), so it
    scores far better than any honest model on today's validation ratings that it was trained on: the old rule
    refused today's model. On the validation ratings it never saw, today's model is better: published."""
    day1, day2 = day_files
    models, metrics = tmp_path / "models", tmp_path / "day2.json"
    assert run_recommend("train", "--ratings", day1, "--model-dir", models, "--rank", 20, "--reg-lambda", 0.002,
                         "--max-steps", 15, "--validation", 0, "--test", 0, "--checkpoint-every", 0) == 0
    _, old, old_attrs = published(models)
    # Without the refit, the published model is the one the guardrail judged.
    assert run_recommend("train", "--ratings", day2, "--model-dir", models, *FAST, "--no-refit", "--metrics",
                         metrics) == 0
    name, new, new_attrs = published(models)
    result = json.loads(metrics.read_text())
    guard = result["guardrail"]
    assert name == "v0002" and result["published"] and guard["passed"] and guard["compared_with"] == "published"

    # This run's validation ratings (its seeded split), as triples of ids, and those v0001 never saw.
    ratings = read_ratings(day2)
    _, parts, _ = train.prepare(ratings, min_entries=0, validation=0.05, test=0.1, seed=0, shift_user_means=False)
    triples = [(str(ratings.user_ids[ratings.users[r]]), str(ratings.item_ids[ratings.items[r]]),
                ratings.values[r]) for r in parts["validation"]]
    seen = seen_pairs(old)
    unseen = [t for t in triples if t[:2] not in seen]
    assert guard["ratings"] == len(unseen) >= train.GUARDRAIL_MIN_RATINGS
    assert guard["validation_ratings"] == len(triples) > len(unseen)
    # The old rule, both models on every validation rating, refused the new model...
    assert result["validation"]["rmse"] > clipped_rmse(old, old_attrs, triples) + guard["tolerance"]
    # ...the new one compares like with like, as the brute force does.
    np.testing.assert_allclose(guard["published_validation_rmse"], clipped_rmse(old, old_attrs, unseen), rtol=1e-6)
    np.testing.assert_allclose(guard["validation_rmse"], clipped_rmse(new, new_attrs, unseen), rtol=1e-6)
    assert guard["validation_rmse"] < guard["published_validation_rmse"]


def test_too_few_unseen_validation_ratings_publish_with_a_warning(run_recommend, day_files, tmp_path, capsys):
    """The same ratings again: the published model saw every validation rating, so nothing is compared."""
    _, day2 = day_files
    models, metrics = tmp_path / "models", tmp_path / "again.json"
    assert run_recommend("train", "--ratings", day2, "--model-dir", models, *FAST) == 0
    status = run_recommend("train", "--ratings", day2, "--model-dir", models, *FAST, "--reg-lambda", 50,
                           "--max-steps", 1, "--metrics", metrics)
    err = capsys.readouterr().err
    assert status == 0, err
    assert "guardrail: only 0 of the" in err and "publishing without a check" in err
    guard = json.loads(metrics.read_text())["guardrail"]
    assert guard["compared_with"].startswith("nothing: only 0 of the") and guard["ratings"] == 0
    assert guard["minimum_ratings"] == train.GUARDRAIL_MIN_RATINGS and "passed" not in guard
    assert (models / "latest").read_text().strip() == "v0002"
