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


def block_squared_error(indptr, indices, ratings, factors, other):
    """Squared error of a block's observed ratings: ``{"sse": sum (r_ui - p_u . q_i)^2, "count": nnz}``.

    Parameters
    ----------
    indptr, indices, ratings : the block's CSR arrays
    factors : ndarray (n_rows, k), the block's own factors
    other : ndarray (n_other, k)
    """
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    predicted = np.einsum("nk,nk->n", factors[rows], other[indices])
    return {"sse": float(((ratings - predicted) ** 2).sum()), "count": len(ratings)}


class BlockedRatings:
    """One side's ratings as CSR row blocks persisted on the workers (users: CSR of R; items: CSR of R^T,
    i.e. CSC of R).

    Parameters
    ----------
    blocks : list of futures, each of a tuple ``(indptr, indices, ratings)``
    bounds : ndarray (n_blocks + 1,), the first row of each block and the row count
    side : 'users' or 'items', names the tasks on the dashboard (``als-solve-users``)
    """

    def __init__(self, blocks, bounds, side):
        self.blocks, self.bounds, self.side = blocks, bounds, side

    @classmethod
    def scatter(cls, client, rows, cols, ratings, n_rows, n_cols, block_rows, side):
        """Build CSR blocks of ``block_rows`` rows from triplets and scatter them to the workers."""
        import scipy.sparse as sp

        matrix = sp.csr_matrix((ratings, (rows, cols)), shape=(n_rows, n_cols))
        bounds = np.append(np.arange(0, n_rows, block_rows), n_rows)
        parts = []
        for start, stop in zip(bounds[:-1], bounds[1:]):
            block = matrix[start:stop]
            parts.append((block.indptr, block.indices, block.data))
        return cls(client.scatter(parts), bounds, side)

    def solve(self, client, other, lam, weighted_lambda, step):
        """One half-step: every row's factors ``(n_rows, k)`` given the other side's ``other``, which goes to
        the workers once."""
        shared = client.scatter(other, broadcast=True, hash=False)
        futures = [client.submit(_solve_block, block, shared, lam, weighted_lambda,
                                 key=f"als-solve-{self.side}-{step}-{i}") for i, block in enumerate(self.blocks)]
        return np.concatenate(client.gather(futures))

    def squared_error(self, client, factors, other, step):
        """Sum of squared errors over every rating of this side, as a tree of per-block sums."""
        from .reduce import add_stats, tree_reduce_futures

        shared = client.scatter(other, broadcast=True, hash=False)
        futures = [client.submit(_block_error, block, factors[a:b], shared, key=f"als-error-{self.side}-{step}-{i}")
                   for i, (block, a, b) in enumerate(zip(self.blocks, self.bounds[:-1], self.bounds[1:]))]
        return tree_reduce_futures(client, futures, add_stats, name=f"als-error-merge-{self.side}-{step}")


def _solve_block(block, other, lam, weighted_lambda):
    return solve_rows(*block, other, lam, weighted_lambda)


def _block_error(block, factors, other):
    return block_squared_error(*block, factors, other)


def fit_als(client, users, items, ratings, n_users, n_items, *, rank, lam, steps, seed=0, weighted_lambda=False,
            block_rows=4096):
    """Alternating least squares on the current cluster: users, then items, ``steps`` times.

    Parameters
    ----------
    users, items : ndarray (N,) int, contiguous indices
    ratings : ndarray (N,) float64
    rank : int; lam : float; steps : int; seed : int (random initial factors, N(0, 0.1^2))

    Returns
    -------
    P : ndarray (n_users, rank), Q : ndarray (n_items, rank), history : list of training RMSE per step
    """
    by_user = BlockedRatings.scatter(client, users, items, ratings, n_users, n_items, block_rows, "users")
    by_item = BlockedRatings.scatter(client, items, users, ratings, n_items, n_users, block_rows, "items")
    rng = np.random.default_rng(seed)
    item_factors = 0.1 * rng.standard_normal((n_items, rank))
    history = []
    for step in range(1, steps + 1):
        user_factors = by_user.solve(client, item_factors, lam, weighted_lambda, step)
        item_factors = by_item.solve(client, user_factors, lam, weighted_lambda, step)
        if not (np.isfinite(user_factors).all() and np.isfinite(item_factors).all()):
            raise FloatingPointError(f"ALS step {step}: factors are not finite; raise lambda")
        error = by_user.squared_error(client, user_factors, item_factors, step)
        history.append(np.sqrt(error["sse"] / error["count"]))
    return user_factors, item_factors, history
