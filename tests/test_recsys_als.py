"""ALS: the block solver against a per-row numpy.linalg.solve reference, and the training loop on a real cluster."""

import dataclasses
import logging

import numpy as np
import pytest
import scipy.sparse as sp

from mixlib.core import checkpoint
from mixlib.recsys import als


def reference(matrix, other, lam, weighted, offset=None):
    """Row by row: p_u = (Q_u^T Q_u + lambda_u I)^-1 Q_u^T (r_u - offset) over the observed ratings only."""
    rank = other.shape[1]
    offset = np.zeros(other.shape[0]) if offset is None else offset
    out = np.zeros((matrix.shape[0], rank))
    for u in range(matrix.shape[0]):
        row = matrix.getrow(u)
        if row.nnz == 0:
            continue
        q = other[row.indices]
        penalty = lam * (row.nnz if weighted else 1)
        out[u] = np.linalg.solve(q.T @ q + penalty * np.eye(rank), q.T @ (row.data - offset[row.indices]))
    return out


def power_law_matrix(rng, users, items, mean_degree):
    degrees = np.minimum(items, np.maximum(0, (rng.pareto(1.5, users) * mean_degree).astype(int)))
    rows = np.repeat(np.arange(users), degrees)
    cols = np.concatenate([rng.choice(items, d, replace=False) for d in degrees])
    return sp.csr_matrix((rng.uniform(0.5, 5.0, len(rows)), (rows, cols)), shape=(users, items))


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("rank", [1, 8, 40])  # rows with fewer ratings than rank take the dual form
def test_block_solver_equals_per_row_solve(weighted, rank):
    rng = np.random.default_rng(rank)
    matrix = power_law_matrix(rng, 300, 120, 6)
    assert (np.diff(matrix.indptr) == 0).any() and np.diff(matrix.indptr).max() > 20  # empty and long rows
    other = rng.normal(size=(120, rank))
    offset = rng.normal(size=120)
    got = als.solve_rows(matrix.indptr, matrix.indices, matrix.data, other, offset, 0.3, weighted)
    np.testing.assert_allclose(got, reference(matrix, other, 0.3, weighted, offset), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("rank", [2, 30])  # the primal and the dual form
def test_bias_penalty_and_count_exponent_equal_a_per_row_solve(rank):
    """The last column (a bias) has its own penalty lambda_b, the others lambda c^gamma: per row,
    (X^T X + diag(lambda c^gamma, ..., lambda_b))^-1 X^T t."""
    rng = np.random.default_rng(rank)
    matrix = power_law_matrix(rng, 200, 90, 6)
    design = np.column_stack([rng.normal(size=(90, rank)), np.ones(90)])
    got = als.solve_rows(matrix.indptr, matrix.indices, matrix.data, design, np.zeros(90), 0.7, True, exponent=0.5,
                         bias_lambda=3.0)
    expected = np.zeros_like(got)
    for u in range(200):
        row = matrix.getrow(u)
        if row.nnz:
            x = design[row.indices]
            penalty = np.append(np.full(rank, 0.7 * row.nnz ** 0.5), 3.0)
            expected[u] = np.linalg.solve(x.T @ x + np.diag(penalty), x.T @ row.data)
    np.testing.assert_allclose(got, expected, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("rank", [3, 40])  # the primal and the dual form
def test_the_squared_error_returned_with_the_solution_is_the_residuals(rank):
    """``with_error``: the squared error computed row by row in the solve equals the residuals of the returned
    solution summed by numpy, and the solution is the same bits as without it."""
    rng = np.random.default_rng(rank + 1)
    matrix = power_law_matrix(rng, 250, 100, 6)
    design, offset = rng.normal(size=(100, rank)), rng.normal(size=100)
    args = (matrix.indptr, matrix.indices, matrix.data, design, offset, 0.4, True)
    solution, error = als.solve_rows(*args, with_error=True)
    np.testing.assert_array_equal(solution, als.solve_rows(*args))
    rows = np.repeat(np.arange(250), np.diff(matrix.indptr))
    residuals = matrix.data - offset[matrix.indices] - np.sum(solution[rows] * design[matrix.indices], axis=1)
    assert error == pytest.approx(float(residuals @ residuals), rel=1e-12)


def test_items_side_is_the_same_solver_on_the_transpose():
    rng = np.random.default_rng(5)
    matrix = power_law_matrix(rng, 80, 50, 5)
    users = rng.normal(size=(80, 4))
    by_columns = matrix.tocsc()  # CSC of R is CSR of R^T
    got = als.solve_rows(by_columns.indptr, by_columns.indices, by_columns.data, users, np.zeros(80), 0.1)
    np.testing.assert_allclose(got, reference(matrix.T.tocsr(), users, 0.1, False), rtol=1e-8, atol=1e-10)


# ------------------------------------------------------------------------------------ the training loop

def options(**overrides):
    values = dict(rank=4, reg_lambda=0.05, weighted_lambda=True, init="random", max_steps=15, patience=100,
                  block_ratings=2000)
    values.update(overrides)
    return als.ALSParams(**values)


def low_rank_ratings(seed=0, n_users=600, n_items=400, rank=4, sigma=0.5, density=0.3, biases=True):
    """Ratings mu + b_u + b_i + P Q^T + N(0, sigma^2) on a random pattern: (users, items, ratings, truth)."""
    rng = np.random.default_rng(seed)
    p, q = rng.normal(size=(n_users, rank)), rng.normal(size=(n_items, rank))
    b_u, b_i = (rng.normal(0, 0.5, n) if biases else np.zeros(n) for n in (n_users, n_items))
    users, items = np.nonzero(rng.random((n_users, n_items)) < density)
    clean = 3.0 * biases + b_u[users] + b_i[items] + np.einsum("nk,nk->n", p[users], q[items])
    return users, items, clean + rng.normal(0, sigma, len(users)), clean


def training_data(users, items, ratings, held, global_bias=True):
    n_users, n_items = users.max() + 1, items.max() + 1
    train = ~held
    matrix = sp.csr_matrix((ratings[train], (users[train], items[train])), shape=(n_users, n_items))
    mu = ratings[train].mean() if global_bias else 0.0
    return als.TrainingData(matrix, (users[held], items[held], ratings[held]), mu)


def fit(client, data, opts, **kwargs):
    rng = np.random.default_rng(0)
    state = als.TrainingState.start(*als.initial_items(data, opts, rng))
    return als.fit_als(client, data, opts, state, **kwargs)


def loss(data, factors, opts):
    """The objective L, brute force over the training triplets."""
    coo = data.matrix.tocoo()
    predicted = als.predict(factors.user_factors, factors.user_bias, factors.item_factors, factors.item_bias,
                            data.mu, coo.row, coo.col)
    counts = [np.diff(data.matrix.indptr), np.diff(data.matrix.tocsc().indptr)]
    user_weight, item_weight = (c ** opts.lambda_exponent if opts.weighted_lambda else np.ones(len(c)) for c in counts)
    penalty = (user_weight @ (factors.user_factors ** 2).sum(1) + item_weight @ (factors.item_factors ** 2).sum(1))
    biases = (factors.user_bias ** 2).sum() + (factors.item_bias ** 2).sum()
    return ((coo.data - predicted) ** 2).sum() + opts.reg_lambda * penalty + opts.bias_lambda * biases


@pytest.mark.parametrize("biases", [True, False])
def test_als_on_low_rank_data_reaches_the_noise_level(client, biases):
    """Held-out RMSE against the noise-free ratings is small, so the RMSE against noisy ones is within 5% of sigma."""
    sigma = 0.5
    users, items, ratings, clean = low_rank_ratings(sigma=sigma, biases=biases)
    held = np.random.default_rng(1).random(len(users)) < 0.1
    opts = options(user_bias=biases, item_bias=biases)
    data = training_data(users, items, ratings, held, global_bias=biases)
    final, _ = fit(client, data, opts)
    f = final.best.here()
    predicted = als.predict(f.user_factors, f.user_bias, f.item_factors, f.item_bias, data.mu, users[held], items[held])
    test_rmse = np.sqrt(np.mean((ratings[held] - predicted) ** 2))
    assert abs(test_rmse - sigma) < 0.05 * sigma, test_rmse
    # The loop's own validation RMSE of the best factors is the one computed here.
    np.testing.assert_allclose(final.best_score, test_rmse, rtol=1e-12)


def test_every_step_lowers_the_objective_and_history_holds_the_loss(client):
    users, items, ratings, _ = low_rank_ratings(seed=3, n_users=200, n_items=150)
    held = np.random.default_rng(2).random(len(users)) < 0.1
    opts = options(max_steps=6)
    data = training_data(users, items, ratings, held)
    losses = []
    state = als.TrainingState.start(*als.initial_items(data, opts, np.random.default_rng(0)))
    for steps in range(1, 7):  # one step at a time, resumed from the previous state
        state, _ = als.fit_als(client, data, dataclasses.replace(opts, max_steps=steps), state)
        losses.append(loss(data, state.current.here(), opts))
        np.testing.assert_allclose(state.history[-1][1], losses[-1], rtol=1e-10)
    assert all(b <= a * (1 + 1e-12) for a, b in zip(losses, losses[1:])), losses


def test_patience_stops_and_restores_the_best_factors(client, caplog):
    """A tiny lambda overfits: the validation RMSE turns up, patience runs out, the best factors come back."""
    users, items, ratings, _ = low_rank_ratings(seed=4, n_users=150, n_items=100, density=0.1)
    held = np.random.default_rng(3).random(len(users)) < 0.2
    opts = options(rank=30, reg_lambda=1e-3, weighted_lambda=False, patience=3, max_steps=60)
    data = training_data(users, items, ratings, held)
    with caplog.at_level(logging.INFO, logger="mixlib"):
        final, early = fit(client, data, opts)
    rmse = final.history[:, 3]
    assert early and final.stale == 3 and final.step == final.best_step + 3
    assert final.best_score == rmse.min() and final.history[np.argmin(rmse), 0] == final.best_step
    f = final.best.here()
    again = als.predict(f.user_factors, f.user_bias, f.item_factors, f.item_bias, data.mu, users[held], items[held])
    np.testing.assert_allclose(np.sqrt(np.mean((ratings[held] - again) ** 2)), final.best_score, rtol=1e-12)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Iteration ")]
    assert len(lines) == final.step
    assert lines[0].startswith("Iteration 1, Train Error: ") and ", Validation Error: " in lines[0]
    assert ", Validation RMSE: " in lines[0]


def test_resume_from_any_checkpoint_ends_with_the_same_factors(client, tmp_path):
    users, items, ratings, _ = low_rank_ratings(seed=5, n_users=200, n_items=120)
    held = np.random.default_rng(4).random(len(users)) < 0.1
    opts = options(max_steps=8, patience=2)
    data = training_data(users, items, ratings, held)
    saved = {}
    whole, _ = fit(client, data, opts, checkpoint=lambda s: saved.setdefault(s.step, s.to_arrays()),
                   checkpoint_every=2)
    assert sorted(saved) == [s for s in (2, 4, 6, 8) if s <= whole.step]
    store = checkpoint.BlockCheckpoint(tmp_path / "ckpt", "fp", "other data")
    store.start(resume=False)
    arrays, scalars = saved[4]
    store.save_latest("step-000004", arrays, {"scalars": scalars})
    _, arrays, attrs = store.load_latest()
    resumed, _ = als.fit_als(client, data, opts, als.TrainingState.from_arrays(arrays, attrs["scalars"]))
    for a, b in zip(dataclasses.astuple(whole.best.here()), dataclasses.astuple(resumed.best.here())):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(whole.history, resumed.history)
    assert (whole.step, whole.best_step, whole.stale) == (resumed.step, resumed.best_step, resumed.stale)


def test_non_finite_factors_name_the_step(client):
    users, items, ratings, _ = low_rank_ratings(seed=6, n_users=50, n_items=40)
    ratings[0] = np.inf
    data = training_data(users, items, ratings, np.zeros(len(users), dtype=bool))
    with pytest.raises(FloatingPointError, match="ALS step 1"):
        fit(client, data, options(max_steps=2))


def test_svd_init_is_the_truncated_svd_of_the_centred_ratings():
    """The initial items are V sqrt(S): their Gram matrix is V S V^T of the top singular triplets."""
    users, items, ratings, _ = low_rank_ratings(seed=7, n_users=80, n_items=60)
    data = training_data(users, items, ratings, np.zeros(len(users), dtype=bool))
    item_factors, item_bias = als.initial_items(data, options(init="svd", rank=5), np.random.default_rng(0))
    dense = data.matrix.toarray() - data.mu * (data.matrix.toarray() != 0)
    _, s, vt = np.linalg.svd(dense)
    np.testing.assert_allclose(item_factors @ item_factors.T, (vt[:5].T * s[:5]) @ vt[:5], atol=1e-8)
    assert not item_bias.any()


def test_rank_is_validated_against_the_data():
    assert als.validate_rank(5, 10, 6, "random") is None
    assert "exceeds" in als.validate_rank(7, 10, 6, "random")
    assert "SVD" in als.validate_rank(6, 10, 6, "svd")


def test_warm_rows_override_the_random_init():
    users, items, ratings, _ = low_rank_ratings(seed=8, n_users=30, n_items=20)
    data = training_data(users, items, ratings, np.zeros(len(users), dtype=bool))
    opts = options(rank=3)
    known_factors, _ = als.initial_items(data, opts, np.random.default_rng(1))
    known_bias = np.arange(20.0)
    first = np.arange(20) < 10
    nan_rows = (np.where(first[:, None], known_factors, np.nan), np.where(first, known_bias, np.nan))
    warm = als.initial_items(data, opts, np.random.default_rng(2), nan_rows)
    fresh = als.initial_items(data, opts, np.random.default_rng(2))
    np.testing.assert_array_equal(warm[0][:10], known_factors[:10])
    np.testing.assert_array_equal(warm[0][10:], fresh[0][10:])
    np.testing.assert_array_equal(warm[1], np.where(first, known_bias, 0.0))
