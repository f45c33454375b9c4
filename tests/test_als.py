"""The ALS block solver against a per-row numpy.linalg.solve reference."""

import numpy as np
import pytest
import scipy.sparse as sp

from mixlib import als


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
@pytest.mark.parametrize("rank", [1, 8])
def test_block_solver_equals_per_row_solve(weighted, rank, monkeypatch):
    rng = np.random.default_rng(rank)
    matrix = power_law_matrix(rng, 300, 120, 6)
    assert (np.diff(matrix.indptr) == 0).any() and np.diff(matrix.indptr).max() > 20  # empty and long rows
    other = rng.normal(size=(120, rank))
    # Small groups, so that many groups (and the group-size rule) are exercised.
    monkeypatch.setattr(als, "GROUP_ELEMENTS", 2000)
    offset = rng.normal(size=120)
    got = als.solve_rows(matrix.indptr, matrix.indices, matrix.data, other, offset, 0.3, weighted)
    np.testing.assert_allclose(got, reference(matrix, other, 0.3, weighted, offset), rtol=1e-8, atol=1e-10)


def test_items_side_is_the_same_solver_on_the_transpose():
    rng = np.random.default_rng(5)
    matrix = power_law_matrix(rng, 80, 50, 5)
    users = rng.normal(size=(80, 4))
    by_columns = matrix.tocsc()  # CSC of R is CSR of R^T
    got = als.solve_rows(by_columns.indptr, by_columns.indices, by_columns.data, users, np.zeros(80), 0.1)
    np.testing.assert_allclose(got, reference(matrix.T.tocsr(), users, 0.1, False), rtol=1e-8, atol=1e-10)


def test_group_size_bounds_padding_and_memory(monkeypatch):
    monkeypatch.setattr(als, "GROUP_ELEMENTS", 1000)
    counts = np.array([3, 3, 4, 6, 7, 20, 50])
    size = als._group_size(counts, rank=10)
    assert size == 4  # the fifth row (7 ratings) would pad the first (3) more than twice
    assert als._group_size(np.array([500]), rank=10) == 1  # a single huge row still gets solved
