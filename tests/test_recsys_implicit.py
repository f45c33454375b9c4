"""Implicit feedback and ranking: the implicit solver and objective against dense brute force, the ranking metrics
against hand-computed values, the full-ranking protocol, and the train / evaluate commands with implicit models,
ranking guardrails, the time split and the final refit."""

import dataclasses
import json

import numpy as np
import pytest
import scipy.sparse as sp
from test_recsys_recommend_job import published

from mixlib.recsys import als, ranking, shards
from mixlib.recsys.ratings import read_ratings, split_by_time


def interactions(rng, n_users, n_items, density):
    """A CSR of counts 1..5 at random pairs, with one user who has none."""
    mask = rng.random((n_users, n_items)) < density
    mask[0] = False
    values = np.where(mask, rng.integers(1, 6, (n_users, n_items)), 0).astype(float)
    return sp.csr_matrix(values)


def dense_solution(matrix, other, alpha, lam, weighted):
    """Row by row with the dense confidence and preference matrices: x_u = (Y^T C_u Y + lambda w_u I)^-1 Y^T C_u p_u."""
    dense = matrix.toarray()
    out = np.zeros((dense.shape[0], other.shape[1]))
    for u, row in enumerate(dense):
        if not (row > 0).any():
            continue
        confidence = 1 + alpha * row
        penalty = lam * ((row > 0).sum() if weighted else 1)
        system = other.T @ (confidence[:, None] * other) + penalty * np.eye(other.shape[1])
        out[u] = np.linalg.solve(system, other.T @ (confidence * (row > 0)))
    return out


def dense_objective(matrix, factors, alpha, lam, weighted):
    """The implicit objective over every (user, item) pair of the dense matrix."""
    dense = matrix.toarray()
    scores = factors.user_factors @ factors.item_factors.T
    data = ((1 + alpha * dense) * ((dense > 0) - scores) ** 2).sum()
    weights = [((dense > 0).sum(axis=axis) if weighted else np.ones(dense.shape[1 - axis])) for axis in (1, 0)]
    penalty = (weights[0] @ (factors.user_factors ** 2).sum(axis=1)
               + weights[1] @ (factors.item_factors ** 2).sum(axis=1))
    return data + lam * penalty


@pytest.mark.parametrize("weighted", [False, True])
def test_implicit_half_step_is_the_dense_minimiser(weighted):
    rng = np.random.default_rng(int(weighted))
    matrix = interactions(rng, 40, 25, 0.3)
    other = rng.normal(size=(25, 6))
    got = als.solve_rows_implicit(matrix.indptr, matrix.indices, matrix.data, other, other.T @ other, 2.5, 0.2,
                                  weighted)
    np.testing.assert_allclose(got, dense_solution(matrix, other, 2.5, 0.2, weighted), rtol=1e-9, atol=1e-12)
    assert not got[0].any()  # no interactions: zeros


def test_implicit_training_loss_is_the_dense_objective_and_falls(client):
    rng = np.random.default_rng(7)
    matrix = interactions(rng, 60, 30, 0.2)
    data = als.TrainingData(matrix, (np.zeros(0, int), np.zeros(0, int), np.zeros(0)), 0.0)
    params = als.ALSParams(rank=4, reg_lambda=0.1, weighted_lambda=False, feedback="implicit", alpha=3.0,
                           init="random", max_steps=1, block_ratings=50)
    state = als.TrainingState.start(*als.initial_items(data, params, np.random.default_rng(0)))
    losses = []  # from step 1: the loop starts from items alone
    for steps in range(1, 7):
        state, _ = als.fit_als(client, data, dataclasses.replace(params, max_steps=steps), state)
        losses.append(dense_objective(matrix, state.current.here(), 3.0, 0.1, False))
        np.testing.assert_allclose(state.history[-1][1], losses[-1], rtol=1e-10)
        assert not state.current.here().user_bias.any() and not state.current.here().item_bias.any()
    assert all(b <= a * (1 + 1e-12) for a, b in zip(losses, losses[1:])), losses


def test_ranking_metrics_of_a_hand_computed_example():
    """Four items scored 4 > 3 > 2 > 1 for every user (one factor, zero biases); N = 3.

    user 0: relevant {0, 2}, nothing excluded: list 0, 1, 2, hits at ranks 1 and 3.
    user 1: relevant {3}, item 0 excluded (training): list 1, 2, 3, hit at rank 3.
    """
    item_factors, item_bias = np.array([[4.0], [3.0], [2.0], [1.0]]), np.zeros(4)
    users = np.ones((2, 1))
    exclude = (np.array([0, 0, 1]), np.array([0]))
    relevant = (np.array([0, 2, 3]), np.array([0, 2, 3]))
    sums = ranking.ranking_sums(users, exclude, relevant, item_factors, item_bias, 3)
    got = ranking.ranking_means(sums, 3, 4)
    d2, d3, d4 = 1 / np.log2(2), 1 / np.log2(3), 1 / np.log2(4)
    expected = {"precision@3": (2 / 3 + 1 / 3) / 2,
                "recall@3": (2 / 2 + 1 / 1) / 2,
                "ndcg@3": ((d2 + d4) / (d2 + d3) + d4 / d2) / 2,
                "map@3": ((1 / 1 + 2 / 3) / 2 + (1 / 3) / 1) / 2,
                "coverage@3": 4 / 4}
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-12, err_msg=key)
    assert got["users_ranked"] == 2
    np.testing.assert_array_equal(sums["listed"], [1, 2, 2, 1])


def test_full_ranking_excludes_training_items_and_ranks_everything_else():
    """Brute force over every user: scores of all items, training items removed, the top N against the relevant
    held-out items; a shard's ranking sums (blocks of 30 and of 7 users) agree with it."""
    rng = np.random.default_rng(3)
    n_users, n_items, top = 50, 40, 5
    train = interactions(rng, n_users, n_items, 0.3)
    users_f, items_f, bias = rng.normal(size=(n_users, 3)), rng.normal(size=(n_items, 3)), rng.normal(size=n_items)
    held = (rng.random((n_users, n_items)) < 0.15) & (train.toarray() == 0)
    pair_users, pair_items = np.nonzero(held)
    scores = users_f @ items_f.T + bias
    scores[train.toarray() > 0] = -np.inf
    ndcg, hits_total = [], 0
    for u in np.unique(pair_users):
        best = np.argsort(-scores[u])[:top]
        assert not (train[u].toarray()[0, best] > 0).any()
        gains = np.isin(best, pair_items[pair_users == u])
        hits_total += gains.sum()
        ideal = (1 / np.log2(np.arange(2, 2 + min(top, (pair_users == u).sum())))).sum()
        ndcg.append((gains / np.log2(np.arange(2, top + 2))).sum() / ideal)
    coo = train.tocoo()
    users = np.concatenate([coo.row, pair_users])
    items = np.concatenate([coo.col, pair_items])
    order = np.lexsort((items, users))  # a shard: sorted by user and item, each rating's part
    shard = {"users": users[order], "items": items[order], "values": np.ones(len(users)),
             "part": np.concatenate([np.zeros(len(coo.row)), np.ones(len(pair_users))]).astype(np.int8)[order]}
    for block_users in (30, 7):
        sums = shards.shard_ranking(shard, (users_f, items_f, bias), 1, -np.inf, top, block_users)
        got = ranking.ranking_means(sums, top, n_items)
        np.testing.assert_allclose(got["ndcg@5"], np.mean(ndcg), rtol=1e-12)
        np.testing.assert_allclose(got["precision@5"] * top * got["users_ranked"], hits_total, rtol=1e-12)


def test_parse_metric():
    assert ranking.parse_metric("auto", "explicit") == ("rmse", 0)
    assert ranking.parse_metric("AUTO", "implicit") == ("ndcg", 10)
    assert ranking.parse_metric("map@5", "explicit") == ("map", 5)
    for bad in ("ndcg", "ndcg@0", "auc@10", "rmse@3"):
        with pytest.raises(ValueError):
            ranking.parse_metric(bad, "explicit")
    with pytest.raises(ValueError, match="ranking metric"):
        ranking.parse_metric("rmse", "implicit")


# ------------------------------------------------------------------------------------------- the commands

def clustered(seed=0, n_users=200, n_items=90, groups=3, per_user=20):
    """Rows (user, item, rating, time) where each user interacts mostly with one group of items (taste), popular
    items more often; ratings are higher inside the user's group; times increase with the row."""
    rng = np.random.default_rng(seed)
    item_group = np.arange(n_items) % groups
    popularity = 1 / np.arange(1, n_items + 1) ** 0.7
    rows = []
    for user in range(n_users):
        weights = popularity * np.where(item_group == user % groups, 8.0, 1.0)
        items = rng.choice(n_items, per_user, replace=False, p=weights / weights.sum())
        for item in items:
            rating = 5 if item_group[item] == user % groups else rng.integers(1, 4)
            rows.append((user + 1, item + 1, int(rating), 1_600_000_000 + 3600 * len(rows)))
    return rows


def write_rows(path, rows, header="user\titem\trating\ttimestamp"):
    lines = ([header] if header else []) + ["\t".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


IMPLICIT = ("--feedback", "implicit", "--rank", 4, "--reg-lambda", 0.05, "--max-steps", 8, "--checkpoint-every", 0)


def test_implicit_model_ranks_better_than_popularity_and_evaluate_equals_brute_force(run_recommend, tmp_path):
    rows = clustered()
    models = tmp_path / "models"
    assert run_recommend("train", "--ratings", write_rows(tmp_path / "r.tsv", rows), "--model-dir", models,
                         *IMPLICIT, "--no-refit", "--metrics", tmp_path / "m.json") == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    guard = metrics["guardrail"]
    assert metrics["feedback"] == "implicit" and metrics["metric"] == "nDCG@10"
    assert guard["compared_with"] == "baseline" and guard["passed"]
    assert guard["validation_ndcg@10"] > guard["baseline_validation_ndcg@10"] + 0.05
    assert "rmse" not in metrics["test"] and metrics["test"]["ndcg@10"] > 0
    # evaluate on new interactions (bare user,item pairs: every one relevant) against brute force from the store
    later = clustered(seed=1)
    heldout = write_rows(tmp_path / "later.tsv", [r[:2] for r in later], header="user\titem")
    assert run_recommend("evaluate", "--model-dir", models, "--ratings", heldout, "--top", 5, "--metrics",
                         tmp_path / "e.json") == 0
    got = json.loads((tmp_path / "e.json").read_text())
    assert "rmse" not in got and got["relevant_rating"] == "every held-out pair"
    _, arrays, _ = published(models)
    user_ids, item_ids = list(arrays["user_ids"]), list(arrays["item_ids"])
    scores = arrays["user_factors"] @ arrays["item_factors"].T + arrays["item_bias"]
    seen = sp.csr_matrix((np.ones(len(arrays["seen_indices"])), arrays["seen_indices"], arrays["seen_indptr"]),
                         shape=scores.shape).toarray() > 0
    scores[seen] = -np.inf
    relevant = {}
    for user, item, *_ in later:
        if user in user_ids and item in item_ids and not seen[user_ids.index(user), item_ids.index(item)]:
            relevant.setdefault(user_ids.index(user), set()).add(item_ids.index(item))
    recall = [np.isin(np.argsort(-scores[u])[:5], list(r)).sum() / len(r) for u, r in relevant.items()]
    assert got["users_ranked"] == len(relevant)
    np.testing.assert_allclose(got["recall@5"], np.mean(recall), rtol=1e-9)


def test_implicit_training_reads_files_without_values(run_recommend, tmp_path):
    pairs = write_rows(tmp_path / "pairs.tsv", [r[:2] for r in clustered()], header="user\titem")
    assert run_recommend("train", "--ratings", pairs, "--model-dir", tmp_path / "m", *IMPLICIT) == 0
    # an explicit model needs ratings: the reader's message, exit 2
    assert run_recommend("train", "--ratings", pairs, "--model-dir", tmp_path / "e", "--rank", 3) == 2


def test_files_with_one_column_or_only_a_header_are_named_as_such(run_recommend, tmp_path, capsys):
    (tmp_path / "one.csv").write_text("user\n1\n2\n")
    (tmp_path / "header.csv").write_text("user,item,rating\n")
    for name, words in (("one.csv", "has one column; give at least 2 columns (user, item)"),
                        ("header.csv", "holds no rating to train on")):
        assert run_recommend("train", "--ratings", tmp_path / name, "--model-dir", tmp_path / "m", *IMPLICIT) == 2
        assert words in capsys.readouterr().err


def test_rmse_guardrail_of_an_implicit_model_is_refused_before_reading(run_recommend, tmp_path, capsys):
    status = run_recommend("train", "--ratings", tmp_path / "missing.tsv", "--model-dir", tmp_path / "m",
                           "--feedback", "implicit", "--guardrail-metric", "rmse")
    assert status == 2 and "--guardrail-metric: rmse judges predicted ratings" in capsys.readouterr().err


def test_ranking_guardrail_compares_with_the_published_model(run_recommend, tmp_path):
    rows = clustered()
    first = write_rows(tmp_path / "first.tsv", [row for n, row in enumerate(rows) if n % 4])
    everything = write_rows(tmp_path / "all.tsv", rows)
    models = tmp_path / "models"
    assert run_recommend("train", "--ratings", first, "--model-dir", models, *IMPLICIT) == 0
    # 28 validation ratings are new to the first model: too few to expect either model to win; the test is that they
    # are compared, by MAP@5
    assert run_recommend("train", "--ratings", everything, "--model-dir", models, *IMPLICIT, "--metrics",
                         tmp_path / "m.json", "--guardrail-metric", "map@5", "--guardrail-tolerance", 1) == 0
    guard = json.loads((tmp_path / "m.json").read_text())["guardrail"]
    assert guard["compared_with"] == "published" and guard["metric"] == "MAP@5"
    assert {"validation_map@5", "published_validation_map@5"} <= set(guard)


def test_refit_publishes_the_model_trained_on_every_rating_for_the_chosen_steps(run_recommend, tmp_path):
    """The refit equals a run on every rating (no held-out ones) for the best step count, bit for bit."""
    path = write_rows(tmp_path / "r.tsv", clustered())
    assert run_recommend("train", "--ratings", path, "--model-dir", tmp_path / "a", *IMPLICIT, "--max-steps", 30,
                         "--metrics", tmp_path / "a.json") == 0
    metrics = json.loads((tmp_path / "a.json").read_text())
    steps = metrics["best_step"]
    assert metrics["refit"] == {"ratings": len(clustered()), "steps": steps, "seconds": metrics["refit"]["seconds"]}
    assert run_recommend("train", "--ratings", path, "--model-dir", tmp_path / "b", *IMPLICIT, "--max-steps", steps,
                         "--validation", 0, "--test", 0) == 0
    _, refit, _ = published(tmp_path / "a")
    _, direct, _ = published(tmp_path / "b")
    for name in ("user_factors", "item_factors"):
        np.testing.assert_array_equal(refit[name], direct[name])


def test_time_split_holds_out_each_users_latest_ratings(run_recommend, tmp_path):
    rows = clustered()
    path = write_rows(tmp_path / "r.tsv", rows, header=None)  # u.data's layout: the 4th column is the time
    assert run_recommend("train", "--ratings", path, "--model-dir", tmp_path / "m", *IMPLICIT, "--split", "time",
                         "--validation", 0.1, "--test", 0.2, "--metrics", tmp_path / "m.json") == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    ratings = read_ratings(path)
    _, validation, test = split_by_time(ratings.users, ratings.times, 0.1, 0.2)
    assert metrics["validation"]["ratings"] == len(validation) and metrics["test"]["ratings"] == len(test)
    # every test rating of a user is later than all of that user's training ratings
    for user in np.unique(ratings.users[test]):
        mine = ratings.users == user
        is_test = np.isin(np.arange(len(mine)), test)
        assert ratings.times[mine & is_test].min() > ratings.times[mine & ~is_test].max()


@pytest.mark.parametrize("feedback", ["explicit", "implicit"])
def test_small_training_runs_here_with_the_cluster_s_model(run_recommend, tmp_path, capsys, feedback):
    """Up to --local-ratings, train runs in this process (no --scheduler) over the same blocks: the same factors."""
    path = write_rows(tmp_path / "r.tsv", clustered())
    options = ("--feedback", feedback, "--rank", 4, "--max-steps", 6, "--checkpoint-every", 0, "--block-ratings", 900)
    factors = {}
    for where, extra in (("cluster", ()), ("here", ("--scheduler", ""))):
        assert run_recommend("train", "--ratings", path, "--model-dir", tmp_path / where, *options, *extra) == 0
        assert ("without a cluster" in capsys.readouterr().err) == (where == "here")
        factors[where] = published(tmp_path / where)[1]
    for name in ("user_factors", "item_factors", "user_bias", "item_bias"):
        np.testing.assert_array_equal(factors["cluster"][name], factors["here"][name])


def test_implicit_loop_resumed_from_its_saved_state_ends_as_an_uninterrupted_one(client):
    """The state a checkpoint saves (to_arrays) carries a ranking validation's best score: a loop stopped after 3
    steps and restarted from the saved arrays ends with the same factors, history and best step."""
    rng = np.random.default_rng(11)
    matrix = interactions(rng, 80, 40, 0.25)
    coo = matrix.tocoo()
    held = rng.random(len(coo.data)) < 0.2
    train = sp.csr_matrix((coo.data[~held], (coo.row[~held], coo.col[~held])), shape=matrix.shape)
    data = als.TrainingData(train, (coo.row[held], coo.col[held], coo.data[held]), 0.0)
    validation = ranking.RankingValidation.from_pairs("ndcg", 5, (train.indptr, train.indices), coo.row[held],
                                                      coo.col[held], 30)
    params = als.ALSParams(rank=3, feedback="implicit", max_steps=8, patience=100, block_ratings=200)
    start = als.TrainingState.start(*als.initial_items(data, params, np.random.default_rng(0)))
    whole, _ = als.fit_als(client, data, params, start, validation=validation)
    first, _ = als.fit_als(client, data, dataclasses.replace(params, max_steps=3), start, validation=validation)
    restored = als.TrainingState.from_arrays(*json.loads(json.dumps(first.to_arrays(), default=lambda a: a.tolist())))
    resumed, _ = als.fit_als(client, data, params, restored, validation=validation)
    assert resumed.best_step == whole.best_step and resumed.best_score == whole.best_score
    np.testing.assert_array_equal(resumed.history, whole.history)
    for name, values in whole.current.here().named().items():
        np.testing.assert_array_equal(getattr(resumed.current.here(), name), values)


def strict_json(path):
    """The file's JSON, refusing NaN and infinities (as strict readers do)."""
    def refuse(constant):
        raise ValueError(f"{path}: {constant} is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_serving_an_implicit_model_odd_requests(run_recommend, tmp_path, capsys):
    """Unknown users get the most popular items; repeated users one list; a --top above the catalogue lists every
    unseen item; metrics files are strict JSON; a --relevant nothing reaches, a kind switch on --warm-start and a
    non-finite number are refused (exit 2)."""
    rows = clustered()
    path = write_rows(tmp_path / "r.tsv", rows)
    models = tmp_path / "models"
    assert run_recommend("train", "--ratings", path, "--model-dir", models, *IMPLICIT, "--metrics",
                         tmp_path / "m.json") == 0
    assert any(value is None for row in strict_json(tmp_path / "m.json")["history"] for value in row)
    users = tmp_path / "users.csv"
    users.write_text("user\n1\nnobody\n1\n")
    assert run_recommend("recommend", "--model-dir", models, "--users", users, "--top", 10 ** 9, "--out",
                         tmp_path / "top.csv") == 0
    lines = (tmp_path / "top.csv").read_text().splitlines()[1:]
    by_user = {}
    for line in lines:
        user, rank, item, _ = line.split(",")
        by_user.setdefault(user, []).append(int(item))
    _, arrays, _ = published(models)
    n_items = len(arrays["item_ids"])
    seen_by_1 = np.diff(arrays["seen_indptr"])[list(arrays["user_ids"]).index(1)]
    assert len(by_user["1"]) == n_items - seen_by_1 and len(lines) == len(by_user["1"]) + n_items  # one list each
    popularity = np.bincount(arrays["seen_indices"], minlength=n_items)
    np.testing.assert_array_equal(by_user["nobody"], arrays["item_ids"][np.argsort(-popularity, kind="stable")])
    for command in (("train", "--ratings", path, "--model-dir", tmp_path / "x", *IMPLICIT, "--relevant", 6),
                    ("evaluate", "--model-dir", models, "--ratings", path, "--top", 5, "--relevant", 6),
                    ("train", "--ratings", path, "--model-dir", models, "--warm-start"),
                    ("train", "--ratings", path, "--model-dir", tmp_path / "y", "--guardrail-tolerance", "nan")):
        assert run_recommend(*command) == 2, command
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error: ") and "Traceback" not in "\n".join(err), err
