"""The Python API's recommenders (mixlib.ExplicitALS, mixlib.ImplicitALS) against the job: a model fitted on a table
in memory is the model ``jobs.recommend train`` fits on the same ratings in a file, and the model store carries
models both ways (a notebook's model served by the job, a job's model opened in a notebook). Brute-force numpy
checks the predictions and the top-N lists.

``check_estimator`` does not apply: a recommender's ``fit`` takes a table of (user, item, rating) rows and its
``predict`` pairs of ids, not a matrix of samples and features.
"""

import csv
import pickle

import numpy as np
import pyarrow as pa
import pytest
from sklearn.base import clone
from test_recsys_recommend_job import synthetic, write_csv

from mixlib import ExplicitALS, ImplicitALS

SETTINGS = {"rank": 3, "reg_lambda": 0.05, "max_steps": 6, "random_state": 4}
JOB_FLAGS = ("--rank", 3, "--reg-lambda", 0.05, "--max-steps", 6, "--seed", 4, "--validation", 0, "--test", 0,
             "--checkpoint-every", 0, "--scheduler", "")


@pytest.fixture(scope="module")
def rows():
    """Synthetic ratings with the 6 decimals that write_csv keeps (the job reads the file, the estimator these)."""
    return [(user, item, round(rating, 6)) for user, item, rating in synthetic(seed=3, n_users=120, n_items=60)]


def as_tables(rows):
    """The same ratings as a dict of columns, a pyarrow Table, a pandas DataFrame and a numpy (N, 3) array."""
    import pandas as pd

    users, items, ratings = (list(column) for column in zip(*rows))
    columns = {"userId": users, "movieId": items, "Rating": ratings}
    numbered = np.column_stack([[int(u[1:]) for u in users], items, ratings])
    return {"dict": columns, "arrow": pa.table(columns), "pandas": pd.DataFrame(columns), "numpy": numbered}


def test_every_kind_of_table_gives_the_same_model(rows):
    models = {kind: ExplicitALS(**SETTINGS).fit(table) for kind, table in as_tables(rows).items()}
    reference = models.pop("dict")
    for kind, model in models.items():
        np.testing.assert_array_equal(model.item_factors_, reference.item_factors_, err_msg=kind)
        np.testing.assert_array_equal(model.user_factors_, reference.user_factors_, err_msg=kind)
    assert [str(u) for u in reference.user_ids_[:2]] == ["u0000", "u0001"]


def test_the_fit_is_the_jobs_train(rows, tmp_path, run_recommend):
    """The job trained on the same ratings in a file with nothing held out: the same factors."""
    ratings = write_csv(tmp_path / "ratings.csv", rows)
    assert run_recommend("train", "--ratings", ratings, "--model-dir", tmp_path / "models", *JOB_FLAGS) == 0
    job_model = ExplicitALS.load(tmp_path / "models")
    ours = ExplicitALS(**SETTINGS).fit(as_tables(rows)["dict"])
    np.testing.assert_allclose(ours.user_factors_, job_model.user_factors_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.item_factors_, job_model.item_factors_, rtol=1e-10, atol=1e-12)
    assert job_model.get_params() == {**ours.get_params(), "user_col": "", "item_col": "", "rating_col": ""}


def test_predictions_and_lists_equal_the_brute_force(rows):
    model = ExplicitALS(**SETTINGS).fit(as_tables(rows)["dict"])
    f, m = model.model_.factors, model.model_
    users, items = np.array(["u0003", "u0007", "nobody"]), np.array([101, 999, 105])
    expected = [m.mu + f.user_bias[3] + f.item_bias[1] + f.user_factors[3] @ f.item_factors[1],
                m.mu + f.user_bias[7],  # an unknown item: the user's bias
                m.mu + f.item_bias[5]]  # an unknown user: the item's bias
    np.testing.assert_allclose(model.predict(users, items), np.clip(expected, *m.rating_range), rtol=1e-12)
    lists = model.recommend(["u0003"], n=4)
    rated = {i for u, i, _ in rows if u == "u0003"}
    scores = {int(i): m.mu + f.user_bias[3] + f.item_bias[j] + f.user_factors[3] @ f.item_factors[j]
              for j, i in enumerate(m.item_ids) if int(i) not in rated}
    best = sorted(scores, key=lambda i: (-scores[i], i))[:4]
    assert lists["item"].tolist() == best and lists["rank"].tolist() == [1, 2, 3, 4]
    np.testing.assert_allclose(lists["score"], np.clip([scores[i] for i in best], *m.rating_range), rtol=1e-12)


def test_a_notebook_model_is_served_by_the_job(rows, tmp_path, run_recommend):
    model = ExplicitALS(**SETTINGS).fit(as_tables(rows)["pandas"])
    assert model.save(tmp_path / "models") == "v0001"
    users = tmp_path / "users.csv"
    users.write_text("user\nu0002\nu0010\nstranger\n")
    out = tmp_path / "top.csv"
    assert run_recommend("recommend", "--model-dir", tmp_path / "models", "--users", users, "--top", 5, "--out", out,
                         "--scheduler", "") == 0
    with open(out) as f:
        written = list(csv.DictReader(f))
    ours = model.recommend(["u0002", "u0010", "stranger"], n=5)
    assert [r["item"] for r in written] == [str(i) for i in ours["item"]]
    np.testing.assert_allclose([float(r["score"]) for r in written], ours["score"], atol=1e-5)  # 6 digits written
    reopened = ExplicitALS.load(tmp_path / "models")
    np.testing.assert_array_equal(reopened.predict(["u0002"], [101]), model.predict(["u0002"], [101]))


def test_implicit_model_ranks_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    taste = rng.integers(0, 2, 200)  # two groups of users, each looking at its own half of the items
    pairs = {(u, int(rng.integers(0, 25)) + 25 * taste[u]) for u in range(200) for _ in range(6)}
    users, items = (np.array(column) for column in zip(*sorted(pairs)))
    model = ImplicitALS(rank=4, max_steps=8).fit({"user": users, "item": items})
    lists = model.recommend(np.arange(200), n=5)
    own_half = (lists["item"] // 25) == taste[lists["user"]]
    assert own_half.mean() > 0.95
    seen = set(zip(users.tolist(), items.tolist()))
    assert not any((u, i) in seen for u, i in zip(lists["user"].tolist(), lists["item"].tolist()))
    model.save(tmp_path / "models")
    with pytest.raises(ValueError, match="open it with ImplicitALS"):
        ExplicitALS.load(tmp_path / "models")
    reopened = ImplicitALS.load(tmp_path / "models")
    assert reopened.recommend([0, 1], n=3)["item"].tolist() == model.recommend([0, 1], n=3)["item"].tolist()


def test_clone_pickle_and_bad_tables(rows):
    model = ExplicitALS(**SETTINGS).fit(as_tables(rows)["dict"])
    assert clone(model).get_params() == model.get_params()
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.predict(["u0001"], [103]), model.predict(["u0001"], [103]))
    with pytest.raises(ValueError, match="has no rating column"):
        ExplicitALS().fit({"user": [1], "item": [2]})
    with pytest.raises(ValueError, match="missing or non-finite"):
        ExplicitALS().fit({"user": [1, 2], "item": [2, 3], "rating": [1.0, np.nan]})
    with pytest.raises(ValueError, match="lower rank"):
        ExplicitALS(rank=60).fit(as_tables(rows)["dict"])
