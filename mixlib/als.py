"""Alternating least squares for explicit ratings: the block solver (pure numpy on one block of rows).

One half-step of ALS solves, for every user u of a block (then, with the roles swapped, every item), the ridge
problem over the items u rated and nothing else::

    p_u = argmin_p  sum_{i in R(u)} (r_ui - p . q_i)^2 + lambda_u ||p||^2
        = (Q_u^T Q_u + lambda_u I)^-1 Q_u^T r_u,        Q_u = the rows of Q for the items in R(u)

with ``lambda_u = lambda`` or, weighted by the row's rating count, ``lambda_u = lambda |R(u)|``. Missing
ratings are not zeros: they do not appear in the sum at all.

The Gram matrices ``Q_u^T Q_u`` of rows with similar rating counts are built together: rows are sorted by
count and cut into groups, each group's item lists padded to its longest (padding rows are zero and add
nothing), so one batched matrix product and one batched Cholesky factorisation serve a whole group, with no
Python loop over rows.
"""

import numpy as np

# A group's padded gather holds at most this many float64 values (rows x longest list x rank): 128 MB.
GROUP_ELEMENTS = 1 << 24


def solve_rows(indptr, indices, ratings, other, lam, weighted_lambda=False):
    """Solve the ridge problem of every row of a CSR block.

    Parameters
    ----------
    indptr : ndarray (n_rows + 1,) int, CSR row pointers of the block
    indices : ndarray (nnz,) int, column (the other side's) index of each rating
    ratings : ndarray (nnz,) float64
    other : ndarray (n_other, k) float64, the other side's factors
    lam : float, the regularisation lambda (> 0 so that every system is positive definite)
    weighted_lambda : bool, scale lambda by each row's rating count

    Returns
    -------
    ndarray (n_rows, k) float64; a row without ratings gets zeros
    """
    n_rows, rank = len(indptr) - 1, other.shape[1]
    counts = np.diff(indptr)
    factors = np.zeros((n_rows, rank))
    order = np.argsort(counts, kind="stable")
    order = order[counts[order] > 0]
    start = 0
    while start < len(order):
        group = order[start:start + _group_size(counts[order[start:]], rank)]
        factors[group] = _solve_group(group, indptr, indices, ratings, other, lam, weighted_lambda)
        start += len(group)
    return factors


def _group_size(sorted_counts, rank):
    """How many of the next rows (rating counts ascending) to solve together: the padded array stays under
    GROUP_ELEMENTS, and no row's list is padded to more than twice its length."""
    rows = np.arange(1, len(sorted_counts) + 1)
    fits = (rows * sorted_counts * rank <= GROUP_ELEMENTS) & (sorted_counts <= 2 * sorted_counts[0])
    return max(1, int(np.argmin(fits)) if not fits.all() else len(fits))


def _solve_group(rows, indptr, indices, ratings, other, lam, weighted_lambda):
    """Solve rows whose item lists fit one padded array ``(len(rows), longest, k)``."""
    counts = indptr[rows + 1] - indptr[rows]
    longest = int(counts.max())
    slot = np.arange(longest)
    present = slot[None, :] < counts[:, None]  # (g, longest)
    position = np.where(present, indptr[rows][:, None] + slot[None, :], 0)
    gathered = other[indices[position]] * present[:, :, None]  # (g, longest, k), zero padding
    values = ratings[position] * present
    gram = np.matmul(np.transpose(gathered, (0, 2, 1)), gathered)  # Q_u^T Q_u, (g, k, k)
    rhs = np.einsum("glk,gl->gk", gathered, values)  # Q_u^T r_u
    penalty = lam * (counts if weighted_lambda else np.ones(len(rows)))
    gram[:, np.arange(gram.shape[1]), np.arange(gram.shape[1])] += penalty[:, None]
    lower = np.linalg.cholesky(gram)
    half = np.linalg.solve(lower, rhs[:, :, None])
    return np.linalg.solve(np.transpose(lower, (0, 2, 1)), half)[:, :, 0]
