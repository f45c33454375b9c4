"""Alternating least squares for explicit ratings and implicit feedback: block kernels, ratings on the workers,
the training loop.

For explicit ratings the model predicts ``r_ui ~ mu + b_u + b_i + p_u . q_i`` (each bias optional) and minimises::

    L = sum_{(u,i) observed} (r_ui - mu - b_u - b_i - p_u . q_i)^2
        + lambda (sum_u w_u |p_u|^2 + sum_i w_i |q_i|^2) + lambda_b (sum_u b_u^2 + sum_i b_i^2)

with ``w = 1``, or ``w = c^gamma`` for a row of ``c`` ratings with ``weighted_lambda`` (``gamma`` = 1 is ALS-WR's
weighting; a smaller exponent shrinks rows of few ratings relatively more). The biases have a penalty of their own,
``lambda_b`` (a constant damping; ``None`` in the kernels: ``lambda w`` as the factors). One half-step solves, for
every user u (then, with the roles swapped, every item), the ridge problem over the items u rated and nothing
else::

    [p_u, b_u] = argmin  sum_{i in R(u)} (r_ui - mu - b_i - [p_u, b_u] . [q_i, 1])^2 + lambda w_u |p_u|^2
                         + lambda_b b_u^2
               = (X_u^T X_u + D_u)^-1 X_u^T t_u,   D_u = diag(lambda w_u, ..., lambda w_u, lambda_b)
    X_u = rows [q_i, 1] (no 1 without b_u),  t_ui = r_ui - mu - b_i

A diagonal ``D_u`` is a scalar penalty after scaling: with the bias column multiplied by ``s_u =
sqrt(lambda w_u / lambda_b)`` and ``b_u = s_u b'_u``, the penalty is ``lambda w_u |[p_u, b'_u]|^2``.

Missing ratings are not zeros: they do not appear in the sum at all. Both half-steps are the same kernel
(:func:`solve_rows`) on a CSR block: of R for users, of R^T (CSC of R) for items. ``mu`` is fixed (the mean
training rating when the global bias is on, else 0). Each row's system is built and solved by a compiled loop
(:mod:`mixlib.recsys.compiled`), in the dual ``X^T (X X^T + lambda I)^-1 t`` for rows with fewer ratings than
unknowns (most users of power-law data).
"""

import dataclasses
import functools
import logging
import operator

import numpy as np

log = logging.getLogger("mixlib")

# ----------------------------------------------------------------------------------------- kernels


def solve_rows(indptr, indices, ratings, design, offset, lam, weighted_lambda=False, *, exponent=1.0,
               bias_lambda=None, with_error=False):
    """Solve the ridge problem of every row of a CSR block (explicit ratings), by a compiled loop over the rows
    (:func:`mixlib.recsys.compiled.explicit_rows`: each row's system built from its ratings and solved by
    Cholesky, in the dual for rows with fewer ratings than unknowns).

    Parameters
    ----------
    indptr : ndarray (n_rows + 1,) int, CSR row pointers of the block
    indices : ndarray (nnz,) int, column (the other side's) index of each rating
    ratings : ndarray (nnz,) float64
    design : ndarray (n_other, d) float64, the other side's row of the design matrix: its factors, with a
        column of ones appended when this side has a bias
    offset : ndarray (n_other,) float64, subtracted from each rating of that column (``mu + b_i``)
    lam : float, the regularisation lambda (> 0 so that every system is positive definite)
    weighted_lambda : bool, scale lambda by each row's rating count to the power ``exponent``
    bias_lambda : float > 0 or None, the penalty of the last column (a bias) instead of lambda's
    with_error : bool, also return the block's squared error after the solve (:func:`block_squared_error`),
        computed row by row while the row's design rows are in cache

    Returns
    -------
    ndarray (n_rows, d) float64 (a row without ratings gets zeros); with ``with_error``, ``(solution, float)``
    """
    from .compiled import explicit_rows

    penalty = _row_penalty(lam, weighted_lambda, exponent, np.diff(indptr))
    row_errors = np.zeros(len(indptr) - 1 if with_error else 0)
    solution = explicit_rows(indptr, indices, np.asarray(ratings, np.float64),
                             np.ascontiguousarray(design, np.float64), np.asarray(offset, np.float64), penalty,
                             0.0 if bias_lambda is None else float(bias_lambda), row_errors)
    return (solution, float(row_errors.sum())) if with_error else solution


def _row_penalty(lam, weighted, exponent, counts):
    """Each row's penalty ``(n_rows,)`` from its count ``c``: ``lambda c^exponent``, or ``lambda`` when not
    ``weighted``."""
    return lam * row_weights(counts, weighted, exponent)


def solve_rows_implicit(indptr, indices, values, factors, gram, alpha, lam, weighted_lambda=False, *, exponent=1.0):
    """Solve every row of a CSR block of implicit feedback (Hu, Koren and Volinsky 2008).

    Every pair (u, i) has preference ``p_ui`` (1 when observed, else 0) and confidence ``c_ui = 1 + alpha r_ui``
    (1 when not observed); the objective is::

        L = sum_{all u, i} c_ui (p_ui - x_u . y_i)^2 + lambda (sum_u w_u |x_u|^2 + sum_i w_i |y_i|^2)

    with ``w = 1``, or the row's count of observed pairs to the power ``exponent`` with ``weighted_lambda``. One
    row's minimiser, given the other side's factors ``Y (n_other, d)``, is::

        x_u = (Y^T Y + Y_u^T (C_u - I) Y_u + lambda w_u I)^-1 Y_u^T C_u 1

    where ``Y_u`` holds the rows of the items u interacted with and ``C_u - I = diag(alpha r_u)`` over them: the
    unobserved pairs enter only through ``Y^T Y`` (``gram``, computed once per half-step), so the dense matrix is
    never formed. Each system is built and solved exactly (Cholesky) by a compiled loop over the rows
    (:func:`mixlib.recsys.compiled.implicit_rows`).

    Parameters
    ----------
    indptr, indices : the block's CSR pattern ``(n_rows + 1,)``, ``(nnz,)``
    values : ndarray (nnz,) float64 >= 0, ``r_ui`` (counts, ratings or ones)
    factors : ndarray (n_other, d) float64, ``Y``
    gram : ndarray (d, d) float64, ``Y^T Y``
    alpha : float >= 0; lam : float > 0; weighted_lambda : bool

    Returns
    -------
    ndarray (n_rows, d) float64; a row without interactions gets zeros (its right-hand side is zero)
    """
    from .compiled import implicit_rows

    penalty = _row_penalty(lam, weighted_lambda, exponent, np.diff(indptr))
    return implicit_rows(indptr, indices, np.asarray(values, np.float64), factors, gram, float(alpha), penalty)


def block_squared_error(indptr, indices, ratings, solution, design, offset):
    """Squared error ``sum (t_ui - x_i . s_u)^2`` of a block's ratings after its half-step.

    The ridge residual is the rating's residual: ``offset_i + x_i . s_u = mu + b_i + [q_i, 1] . [p_u, b_u]`` is
    the prediction of ``r_ui`` (with ``[q_i, 1]`` or ``q_i`` as the half-step built the design).

    Parameters
    ----------
    indptr, indices, ratings : the block's CSR arrays
    solution : ndarray (n_rows, d), the block's solution from :func:`solve_rows`
    design : ndarray (n_other, d), offset : ndarray (n_other,), as given to :func:`solve_rows`

    Returns
    -------
    float
    """
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    predicted = offset[indices] + np.einsum("nd,nd->n", solution[rows], design[indices])
    return float(((ratings - predicted) ** 2).sum())


def block_implicit_loss(indptr, indices, values, solution, factors, alpha):
    """The observed pairs' part of the implicit objective, ``sum_obs (1 + alpha r_ui)(1 - s_ui)^2 - s_ui^2`` with
    ``s_ui = x_u . y_i``, over a block's pairs after its half-step (``solution (n_rows, d)``, the other side's
    ``factors (n_other, d)``). The rest of the data term, ``sum_{all u, i} s_ui^2``, is a trace of the two Gram
    matrices (:meth:`_Sides.losses`)."""
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    scores = np.einsum("nd,nd->n", solution[rows], factors[indices])
    return float(((1.0 + alpha * values) * (1.0 - scores) ** 2 - scores ** 2).sum())


PREDICT_PAIRS = 1 << 16  # pairs predicted at a time: the gathered factor rows stay a few MB


def predict(user_factors, user_bias, item_factors, item_bias, mu, users, items):
    """Predictions ``(n,)`` = mu + b_u + b_i + p_u . q_i for index pairs ``users (n,)``, ``items (n,)``, computed
    :data:`PREDICT_PAIRS` at a time (gathering every pair's factor rows at once would take 2 n k floats)."""
    out = mu + user_bias[users] + item_bias[items]
    for start in range(0, len(out), PREDICT_PAIRS):
        u, i = users[start:start + PREDICT_PAIRS], items[start:start + PREDICT_PAIRS]
        out[start:start + len(u)] += np.einsum("nk,nk->n", user_factors[u], item_factors[i])
    return out


# ------------------------------------------------------------------------------- data on the cluster

ADVICE = "give the workers more memory or use smaller blocks (--block-ratings), then rerun with --resume"


class BlockedRatings:
    """One side's ratings as CSR row blocks persisted on the workers (users: CSR of R; items: CSR of R^T,
    i.e. CSC of R), or kept in this process (no client): the same blocks, solved one after another here.

    Parameters
    ----------
    parts : list of tuples ``(indptr, indices, ratings)``, the blocks (the client's copy, to rebuild lost ones), or
        None for blocks that tasks built on the workers (Dask computes a lost one again)
    blocks : list of futures of the blocks on the workers, or ``parts`` in this process
    counts : ndarray (n_rows,), ratings per row
    side : 'users' or 'items', names the tasks on the dashboard (``als-solve-users``)
    held : list of blocks like ``blocks`` (the same rows) of held-out ratings, judged by the half-step's tasks
        (:meth:`solve`), or None; ``held_parts`` as ``parts``
    """

    def __init__(self, parts, blocks, counts, side, held=None, held_parts=None):
        import uuid

        self.parts, self.blocks, self.counts, self.side = parts, blocks, counts, side
        self.held, self.held_parts = held, held_parts
        # Task keys: als-solve-users-<this scatter>-<step>-<attempt>-<block>, unique however many fits share a
        # cluster.
        self.run = uuid.uuid4().hex[:12]
        self.products_done = 0

    @classmethod
    def scatter(cls, client, matrix, block_ratings, side, held=None):
        """Cut a CSR matrix ``(n_rows, n_other)`` into blocks of about ``block_ratings`` ratings (whole rows; the
        cut depends on the data only, never on the cluster: :func:`mixlib.recsys.shards.row_cuts`) and scatter
        them to the workers (none: ``client`` is None), with the same rows of the CSR matrix ``held`` (held-out
        ratings) when given."""
        from .shards import row_cuts

        bounds = row_cuts(matrix.indptr, block_ratings)
        parts = _cut(matrix, bounds)
        held_parts = None if held is None else _cut(held, bounds)
        return cls.placed(client, parts, np.diff(matrix.indptr), side, held_parts)

    @classmethod
    def placed(cls, client, parts, counts, side, held_parts=None):
        """Blocks ``parts`` (and ``held_parts``) of this process scattered to the workers (kept here when
        ``client`` is None)."""
        def placed(blocks):
            return blocks if client is None or blocks is None else client.scatter(blocks, hash=False)

        return cls(parts, placed(parts), counts, side, placed(held_parts), held_parts)

    def products(self, client, vector, ones=False, shift=0.0):
        """``A x`` ``(n_rows,)`` of the matrix ``A`` whose rows these blocks hold, its values less ``shift`` (or
        all 1 with ``ones``), for ``vector (n_other,)``: a round of ``als-product`` tasks (in this process without
        ``client``)."""
        from ..core.cluster import with_rebuilds

        if client is None:
            return np.concatenate([_block_product(block, vector, ones, shift) for block in self.blocks])
        self.products_done += 1

        def run(attempt):
            self.rebuild(client, attempt)
            shared = client.scatter(vector, broadcast=True, hash=False)
            futures = [client.submit(_block_product, block, shared, ones, shift, pure=False,
                                     key=f"als-product-{self.side}-{self.run}-{self.products_done}-{attempt}-{i}")
                       for i, block in enumerate(self.blocks)]
            return np.concatenate(client.gather(futures))

        return with_rebuilds(run, f"the SVD init, {self.side}", ADVICE)

    def rebuild(self, client, attempt):
        """Scatter this process's copy of the blocks again when a phase runs again after a lost worker (blocks
        that tasks built are computed again by Dask from their lineage)."""
        if attempt > 1 and self.parts is not None:
            self.blocks = client.scatter(self.parts, hash=False)
            if self.held_parts is not None:
                self.held = client.scatter(self.held_parts, hash=False)

    def spread(self, client):
        """Move blocks that tasks built (and their held-out blocks) to the workers in turn, block ``i`` to the
        ``i mod W``-th of :func:`designs_on_workers`'s workers, by tasks that take them there (a lost one is
        computed again from its lineage). Blocks built by groups of consecutive items sit together, and their cost
        follows the items' popularity; in turn, each worker gets about the same share of every range. Scattered
        blocks stay where they are."""
        if self.parts is not None:
            return
        from ..core.cluster import worker_addresses
        from .dataset import identity

        workers = worker_addresses(client)

        def moved(blocks, name):
            return [client.submit(identity, block, workers=[workers[i % len(workers)]], allow_other_workers=True,
                                  pure=False, key=f"als-spread-{name}-{self.run}-{i}")
                    for i, block in enumerate(blocks)]

        self.blocks = moved(self.blocks, self.side)
        if self.held is not None:
            self.held = moved(self.held, f"{self.side}-held")

    def _held(self, with_error):
        """The held-out block of each block when the errors are wanted, else None each."""
        return self.held if with_error and self.held is not None else [None] * len(self.blocks)

    def submit(self, client, half, shared, try_name, with_error):
        """The blocks' solutions (:func:`_solve_block`): futures of tasks where the blocks are, or the solutions
        computed here without ``client``.

        ``shared`` is a future of the other side's arrays (the arrays here), or ``{worker address: such a
        future}``: each block's task then takes the copy on the block's worker (:func:`_copies_beside`), so the
        scheduler runs it there and nothing large moves."""
        if client is None:
            return [_solve_block(block, shared, half, with_error, held)
                    for block, held in zip(self.blocks, self._held(with_error))]
        if isinstance(shared, dict):
            given = _copies_beside(client, self.blocks, shared)
        else:
            given = [shared] * len(self.blocks)
        return [client.submit(_solve_block, block, copy, half, with_error, held, pure=False,
                              key=f"als-solve-{self.side}-{self.run}-{try_name}-{i}")
                for i, (block, copy, held) in enumerate(zip(self.blocks, given, self._held(with_error)))]

    def row_bounds(self, client):
        """The first row of each block, and the rows: ``(n_blocks + 1,)`` int64 (the blocks' lengths asked of
        the tasks that hold them)."""
        lengths = [_block_rows(b) for b in self.blocks] if client is None else client.gather(
            [client.submit(_block_rows, b, pure=False, key=f"als-rows-{self.side}-{self.run}-{i}")
             for i, b in enumerate(self.blocks)])
        return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def _copies_beside(client, blocks, copies):
    """For each block (a future), the copy of ``copies`` (``{worker address: future}``) on a worker that holds the
    block, or the ``i mod W``-th copy for a block not held yet (:meth:`BlockedRatings.spread` sends block ``i``
    to the ``i mod W``-th worker)."""
    holders = client.who_has(blocks)
    ordered = list(copies.values())
    given = []
    for i, block in enumerate(blocks):
        held = [copies[w] for w in holders.get(block.key, ()) if w in copies]
        given.append(held[0] if held else ordered[i % len(ordered)])
    return given


def _block_rows(block):
    """The rows of a CSR block ``(indptr, indices, values)``."""
    return len(block[0]) - 1


def designs_on_workers(client, stack, solved, name):
    """``{worker address: future of stack(solved)}``: what the other side's half-step shares, made on every
    worker from this side's solutions ``solved`` (futures of the blocks' solutions) by ``stack`` (a function of
    the list of solutions: :func:`_stacked_design`, :func:`_stacked_with_gram`). Each worker fetches only the
    blocks it lacks, and the job's process sends nothing. Threaded workers in one process (``inproc://``) share
    one copy: one future, not a dict."""
    from ..core.cluster import worker_addresses

    workers = worker_addresses(client)
    if all(address.startswith("inproc://") for address in workers):
        return client.submit(stack, solved, pure=False, key=f"als-design-{name}")
    return {address: client.submit(stack, solved, workers=[address], allow_other_workers=True, pure=False,
                                   key=f"als-design-{name}-{number}")
            for number, address in enumerate(workers)}


def _stacked_design(solved, solved_bias, ones, mu):
    """``(design, offset)`` for the other side's explicit half-step from the blocks' solutions of this one:
    :func:`_split_solution` of them joined, then :func:`_design`."""
    factors, bias = _split_solution(np.concatenate(solved), solved_bias)
    return _design(factors, ones), mu + bias


def _stacked_with_gram(solved):
    """``(factors (n, d), factors^T factors (d, d))`` for the other side's implicit half-step from the blocks'
    solutions of this one (the Gram matrix by :func:`mixlib.recsys.compiled.gram_rows`: the same bits on every
    worker and here)."""
    from .compiled import gram_rows

    factors = np.concatenate(solved)
    return factors, gram_rows(factors)


def _split_solution(solution, with_bias):
    """``(factors, bias)`` of an explicit half-step's solution ``(n, d)``: its last column is the bias when the
    side has one, else the bias is zeros."""
    if with_bias:
        return solution[:, :-1], solution[:, -1]
    return solution, np.zeros(len(solution))


def _design(factors, ones):
    """The design ``(n, d)`` a half-step solves against: the other side's factors, with a column of ones when the
    side solved has a bias."""
    return np.column_stack([factors, np.ones(len(factors))]) if ones else factors


def _cut(matrix, bounds):
    """The CSR blocks ``(indptr, indices, data)`` of the rows ``bounds[j]`` to ``bounds[j + 1]`` of ``matrix``."""
    blocks = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        block = matrix[start:stop]
        blocks.append((block.indptr, block.indices, block.data))
    return blocks


def _block_product(block, vector, ones, shift):
    """``B x`` for a CSR block ``B`` with its values less ``shift``, or all 1 with ``ones``."""
    import scipy.sparse as sp

    indptr, indices, data = block
    data = np.ones(len(data)) if ones else data - shift
    return sp.csr_matrix((data, indices, indptr), shape=(len(indptr) - 1, len(vector))) @ vector


def _solve_block(block, shared, half, with_error, held=None):
    """A block's solution, or ``(solution, error, held-out error or None)`` with ``with_error``."""
    if not with_error:
        return half.solve(block, shared)
    solution, error = half.solve(block, shared, with_error=True)
    held_error = None if held is None else half.error(held, solution, shared)
    return solution, error, held_error


@dataclasses.dataclass(frozen=True)
class ExplicitHalf:
    """The explicit half-step: ``shared`` is ``(design (n_other, d), offset (n_other,))`` (:func:`solve_rows`);
    its error is the block's squared error (:func:`block_squared_error`)."""

    lam: float
    weighted_lambda: bool
    exponent: float = 1.0
    bias_lambda: float | None = None  # the last column is a bias with this penalty

    def solve(self, block, shared, with_error=False):
        """The block's solution, or ``(solution, squared error)`` with ``with_error``."""
        return solve_rows(*block, *shared, self.lam, self.weighted_lambda, exponent=self.exponent,
                          bias_lambda=self.bias_lambda, with_error=with_error)

    def error(self, block, solution, shared):
        return block_squared_error(*block, solution, *shared)


@dataclasses.dataclass(frozen=True)
class ImplicitHalf:
    """The implicit half-step: ``shared`` is ``(factors (n_other, d), gram (d, d))`` (:func:`solve_rows_implicit`);
    its error is the observed pairs' part of the objective (:func:`block_implicit_loss`)."""

    alpha: float
    lam: float
    weighted_lambda: bool
    exponent: float = 1.0

    def solve(self, block, shared, with_error=False):
        """The block's solution, or ``(solution, its error)`` with ``with_error``."""
        solution = solve_rows_implicit(*block, *shared, self.alpha, self.lam, self.weighted_lambda,
                                       exponent=self.exponent)
        return (solution, self.error(block, solution, shared)) if with_error else solution

    def error(self, block, solution, shared):
        return block_implicit_loss(*block, solution, shared[0], self.alpha)


# ---------------------------------------------------------------------------------------- baseline

def fit_baseline(users, items, values, n_users, n_items, reg_user, reg_item, tol=1e-6, max_sweeps=200):
    """The bias-only baseline ``r_ui ~ mu + b_u + b_i`` by regularised least squares (Surprise's BaselineOnly).

    ``mu`` is the mean rating; the biases minimise::

        sum_{(u,i) observed} (r_ui - mu - b_u - b_i)^2 + reg_user sum_u b_u^2 + reg_item sum_i b_i^2

    by alternating exact minimisation (Koren 2010, as Surprise's ``baseline_als``), items then users::

        b_i = sum_{u in R(i)} (r_ui - mu - b_u) / (reg_item + |R(i)|)
        b_u = sum_{i in R(u)} (r_ui - mu - b_i) / (reg_user + |R(u)|)

    The objective is strictly convex (both regularisations > 0), so the sweeps converge to its one minimum; they
    stop when no bias moves by more than ``tol`` or after ``max_sweeps``. A user or item without ratings gets 0.

    Parameters
    ----------
    users, items : ndarray (N,) int, indices below ``n_users``, ``n_items``
    values : ndarray (N,) float64, N > 0
    n_users, n_items : int
    reg_user, reg_item : float > 0
    tol : float; max_sweeps : int

    Returns
    -------
    mu : float; user_bias : ndarray (n_users,); item_bias : ndarray (n_items,)
    """
    mu = float(values.mean())
    user_bias, item_bias = np.zeros(n_users), np.zeros(n_items)
    user_count = np.bincount(users, minlength=n_users) + reg_user
    item_count = np.bincount(items, minlength=n_items) + reg_item
    for _ in range(max_sweeps):
        new_item = np.bincount(items, values - mu - user_bias[users], n_items) / item_count
        new_user = np.bincount(users, values - mu - new_item[items], n_users) / user_count
        moved = max(np.abs(new_item - item_bias).max(initial=0), np.abs(new_user - user_bias).max(initial=0))
        user_bias, item_bias = new_user, new_item
        if moved <= tol:
            break
    return mu, user_bias, item_bias


# -------------------------------------------------------------------------------- parameters and state

@dataclasses.dataclass(frozen=True)
class ALSParams:
    """The model's shape and its training loop.

    Attributes
    ----------
    rank : int, latent factors per user and item
    reg_lambda : float, lambda in the objective above (> 0: every system is then positive definite)
    weighted_lambda : bool, lambda scaled by each row's rating count ``c`` to the power ``lambda_exponent``
    lambda_exponent : float, ``gamma`` of the weights ``c^gamma``
    bias_lambda : float > 0, ``lambda_b``, the biases' penalty
    user_bias, item_bias : bool, learn ``b_u``, ``b_i`` (explicit feedback only)
    feedback : 'explicit' (ratings, the objective of this module's docstring) or 'implicit' (interactions, the
        objective of :func:`solve_rows_implicit`, no biases)
    alpha : float, implicit feedback: confidence ``1 + alpha r_ui`` of an observed pair
    init : 'svd' (truncated SVD of the ratings; of the interaction pattern for implicit feedback) or 'random'
        (seeded draws)
    init_scale : float, standard deviation of random initial factors
    max_steps : int, ALS steps (a user half-step, then an item half-step) at most
    eval_every : int, steps between two evaluations of the training loss and the validation error
    log_every : int, steps between two log lines (a multiple of ``eval_every``)
    patience : int, evaluations without a better validation score before the loop stops
    block_ratings : int, ratings per block of whole users (items) on the workers
    """

    rank: int = 16
    reg_lambda: float = 1.3
    weighted_lambda: bool = True
    lambda_exponent: float = 0.5
    bias_lambda: float = 4.0
    user_bias: bool = True
    item_bias: bool = True
    feedback: str = "explicit"
    alpha: float = 1.0
    init: str = "svd"
    init_scale: float = 0.1
    max_steps: int = 50
    eval_every: int = 1
    log_every: int = 1
    patience: int = 3
    block_ratings: int = 262144


@dataclasses.dataclass(frozen=True)
class Factors:
    """Factors and biases of both sides; a disabled bias is zeros.

    Attributes
    ----------
    user_factors : ndarray (n_users, k); user_bias : ndarray (n_users,)
    item_factors : ndarray (n_items, k); item_bias : ndarray (n_items,)
    """

    user_factors: np.ndarray
    user_bias: np.ndarray
    item_factors: np.ndarray
    item_bias: np.ndarray

    def named(self):
        """``{field name: array}`` in field order, not copied (``dataclasses.asdict`` deep-copies the arrays)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def item_scores(self):
        """What ranks the items for any one user: ``(item_factors (n_items, k), item_bias (n_items,))``."""
        return self.item_factors, self.item_bias


def penalty_sums(factors, bias, weights):
    """One side's (or one block's) share of the penalty: ``{"factors": sum_u w_u |p_u|^2, "bias": sum_u b_u^2,
    "nonfinite": count of entries that are not finite}`` for ``factors (n, k)``, ``bias (n,)``, ``weights (n,)``.
    The objective's penalty is ``lambda (users' + items' "factors") + lambda_b (users' + items' "bias")``."""
    norms = np.einsum("uk,uk->u", factors, factors)
    nonfinite = int((~np.isfinite(factors)).sum() + (~np.isfinite(bias)).sum())
    return {"factors": float(weights @ norms), "bias": float(bias @ bias), "nonfinite": nonfinite}


def row_weights(counts, weighted, exponent):
    """The penalty's weights ``w (n,)`` of rows of ``counts (n,)`` ratings: ``c^exponent``, or ones when not
    ``weighted``."""
    return counts.astype(np.float64) ** exponent if weighted else np.ones(len(counts))


@dataclasses.dataclass(frozen=True, eq=False)
class SolvedRows:
    """One side's solution of a half-step, kept where it was solved: ``blocks[j]`` holds the rows ``bounds[j]``
    to ``bounds[j + 1]``, their factors ``(b, k)`` then a bias column when ``with_bias``; futures on the workers
    of ``tasks`` (:class:`mixlib.recsys.dataset.Tasks`), or arrays in this process without a client. The job's
    process holds them whole only when asked (:meth:`here`).

    Attributes
    ----------
    blocks : list; bounds : ndarray (n_blocks + 1,) int64; with_bias : bool; tasks : Tasks
    """

    blocks: list
    bounds: np.ndarray
    with_bias: bool
    tasks: object

    def __len__(self):
        return int(self.bounds[-1])

    def here(self):
        """``(factors (n, k), bias (n,))`` in this process."""
        return _split_solution(np.concatenate(self.tasks.gather(self.blocks)), self.with_bias)

    def alive(self):
        """Whether every block is a value here or a future whose data the cluster holds or computes."""
        return all(_lives(block) for block in self.blocks)

    def ranges(self, bounds):
        """``(factors, bias)`` of the rows ``bounds[j]`` to ``bounds[j + 1]`` for each j: one task each (values
        here), taking only the blocks its range overlaps."""
        if np.array_equal(bounds, self.bounds):
            return self.tasks.map(_split_solution, self.blocks, self.with_bias)
        out = []
        for first, last in zip(bounds[:-1], bounds[1:]):
            lo = int(np.searchsorted(self.bounds, first, side="right")) - 1
            hi = max(int(np.searchsorted(self.bounds, last, side="left")), lo + 1)
            out.append(self.tasks.call(_rows_between, int(first), int(last), int(self.bounds[lo]), self.with_bias,
                                       *self.blocks[lo:hi]))
        return out

    def rows(self, which):
        """``(factors (m, k), bias (m,))`` of the rows ``which (m,)`` (ascending), only they fetched."""
        block_of = np.searchsorted(self.bounds, which, side="right") - 1
        wanted = np.flatnonzero(np.bincount(block_of, minlength=len(self.blocks)))
        parts = self.tasks.gather([self.tasks.call(_rows_at, self.blocks[j], which[block_of == j] - self.bounds[j])
                                   for j in wanted])
        joined = np.concatenate(parts) if parts else np.zeros((0, 1))
        return _split_solution(joined, self.with_bias)

    def sums(self, rating_blocks, weighted, exponent, gram=False):
        """:func:`penalty_sums` of every row, block by block beside their rating blocks ``rating_blocks`` (whose
        counts weigh the penalty), summed in a tree; with ``gram``, also ``"gram"``, ``sum_u x_u x_u^T`` ``(k,
        k)``. Submitted, not waited for: ``tasks.gather`` gives the dict (:meth:`Tasks.tree_submitted`)."""
        from ..core.reduce import add_stats
        from .dataset import identity

        kernel = functools.partial(_block_sums, with_bias=self.with_bias, weighted=weighted, exponent=exponent,
                                   gram=gram)
        return self.tasks.tree_submitted(self.tasks.zip(kernel, self.blocks, rating_blocks), identity, add_stats)


def _lives(value):
    """Whether a value here, or a future that is still computing or done (not lost, failed or cancelled)."""
    return getattr(value, "status", "finished") not in ("lost", "error", "cancelled")


def _rows_between(first, last, offset, with_bias, *blocks):
    """``(factors, bias)`` of the rows ``first`` to ``last`` of consecutive solution blocks, the first of which
    starts at row ``offset``."""
    joined = np.concatenate(blocks)
    return _split_solution(joined[first - offset:last - offset], with_bias)


def _rows_at(block, rows):
    """The rows ``rows`` of a solution block."""
    return block[rows]


def _block_sums(solution, ratings, with_bias, weighted, exponent, gram):
    """:func:`penalty_sums` of a block of a side's solution, weighted by the counts of its rating block, and with
    ``gram`` their Gram matrix ``"gram"`` (:func:`mixlib.recsys.compiled.gram_rows`)."""
    factors, bias = _split_solution(solution, with_bias)
    sums = penalty_sums(factors, bias, row_weights(np.diff(ratings[0]), weighted, exponent))
    if gram:
        from .compiled import gram_rows

        sums["gram"] = gram_rows(np.ascontiguousarray(factors))
    return sums


@dataclasses.dataclass(frozen=True, eq=False)
class ReplicatedRows:
    """A side's whole solution, factors ``(n, k)`` then a bias column when ``with_bias``, held whole by every
    worker, so that a lost worker costs no data: ``copies`` maps a worker's address to the future of its copy
    (``"all"``: one future broadcast to every worker; ``"here"``: the array in this process, without a client).

    Attributes
    ----------
    copies : dict; with_bias : bool; tasks : Tasks
    """

    copies: dict
    with_bias: bool
    tasks: object

    @classmethod
    def placed(cls, tasks, factors, bias, with_bias):
        """``factors (n, k)`` and ``bias (n,)`` of this process, broadcast to the workers of ``tasks``."""
        solution = np.column_stack([factors, bias]) if with_bias else np.asarray(factors)
        if tasks.client is None:
            return cls({"here": solution}, with_bias, tasks)
        return cls({"all": tasks.client.scatter(solution, broadcast=True, hash=False)}, with_bias, tasks)

    @classmethod
    def stacked(cls, solved, name):
        """The blocks of ``solved`` (SolvedRows) joined on every worker (:func:`designs_on_workers`)."""
        if solved.tasks.client is None:
            return cls({"here": np.concatenate(solved.blocks)}, solved.with_bias, solved.tasks)
        copies = designs_on_workers(solved.tasks.client, np.concatenate, solved.blocks, name)
        return cls(copies if isinstance(copies, dict) else {"all": copies}, solved.with_bias, solved.tasks)

    def done(self):
        """Itself, once every copy is made: from then on, a lost worker costs no data."""
        if self.tasks.client is not None:
            from distributed import wait

            wait(list(self.copies.values()))
        return self

    def alive(self):
        """The copies whose data the cluster holds or computes (every one here)."""
        return {where: copy for where, copy in self.copies.items() if _lives(copy)}

    def here(self):
        """``(factors (n, k), bias (n,))`` in this process, from a copy that lives."""
        copy = next(iter(self.alive().values()))
        return _split_solution(copy if self.tasks.client is None else self.tasks.client.gather(copy), self.with_bias)

    def shared(self, stack, name):
        """``stack([solution])`` made beside every living copy: ``{worker address: future}`` (the value here)."""
        client = self.tasks.client
        alive = self.alive()
        if client is None:
            return stack([alive["here"]])
        if "all" in alive:  # one future on every worker: made on each, as from blocks
            return designs_on_workers(client, stack, [alive["all"]], f"shared-{name}")
        return {address: client.submit(stack, [copy], workers=[address], allow_other_workers=True, pure=False,
                                       key=f"als-shared-{name}-{number}")
                for number, (address, copy) in enumerate(alive.items())}


@dataclasses.dataclass(frozen=True)
class StepFactors:
    """What the training loop carries from a step, on the workers: the items after it, and the items before it
    (``source``, from which its user half-step solved the users; None at step 0), each held whole by every worker
    (:class:`ReplicatedRows`). The users follow from the source, so they are never saved: ``users`` holds their
    solution by block where it was solved (:class:`SolvedRows`) while it lives, and :meth:`_Sides.solved_users`
    solves them again when it does not.

    Attributes
    ----------
    items : ReplicatedRows; source : ReplicatedRows or None; users : SolvedRows or None
    """

    items: ReplicatedRows
    source: ReplicatedRows | None = None
    users: SolvedRows | None = None

    def here(self):
        """The :class:`Factors` of both sides in this process (gathered)."""
        return Factors(*self.users.here(), *self.items.here())

    def item_scores(self):
        """What ranks the items for any one user, gathered here: ``(item_factors (n_items, k), item_bias
        (n_items,))``."""
        return self.items.here()

    def saved(self, prefix):
        """``{name: array}`` of what a checkpoint keeps (no users), gathered here: the items, and the source after
        step 0."""
        arrays = dict(zip((f"{prefix}/item_factors", f"{prefix}/item_bias"), self.items.here()))
        if self.source is not None:
            arrays.update(zip((f"{prefix}/source_factors", f"{prefix}/source_bias"), self.source.here()))
        return arrays

    @classmethod
    def restored(cls, arrays, prefix):
        """The factors that :meth:`saved` gave, in this process (:meth:`_Sides.placed` sends them to the
        workers)."""
        from .dataset import Tasks

        def rows(name):
            if f"{prefix}/{name}_factors" not in arrays:
                return None
            return ReplicatedRows.placed(Tasks(None), np.asarray(arrays[f"{prefix}/{name}_factors"]),
                                         np.asarray(arrays[f"{prefix}/{name}_bias"]), True)

        return cls(rows("item"), rows("source"))


@dataclasses.dataclass(frozen=True)
class TrainingState:
    """Everything the training loop carries from one step to the next (what a checkpoint holds).

    Attributes
    ----------
    step : int, ALS steps done
    current : StepFactors, after ``step`` steps
    best : StepFactors, those with the best validation score so far (``current`` without validation ratings)
    best_step : int, the step of ``best`` (0: the initial factors)
    best_score : float, their validation score (RMSE, or a ranking metric; None before the first evaluation)
    stale : int, evaluations since ``best`` improved
    history : ndarray (n_evaluations, 4): step, training loss L, validation squared error (NaN when the score
        is a ranking metric), validation score
    """

    step: int
    current: StepFactors
    best: StepFactors
    best_step: int
    best_score: float | None
    stale: int
    history: np.ndarray

    @classmethod
    def start(cls, item_factors, item_bias):
        """The state before the first step, from the initial items of this process (:func:`initial_items`): a
        step starts with the users' half-step, which needs no users."""
        from .dataset import Tasks

        factors = StepFactors(ReplicatedRows.placed(Tasks(None), item_factors, item_bias, True))
        return cls(0, factors, factors, 0, None, 0, np.zeros((0, 4)))

    def to_arrays(self):
        """``(arrays, scalars)``: name -> ndarray and name -> JSON number, the whole state (for a checkpoint)."""
        current = self.current.saved("current")
        if self.best is self.current:  # gathered once
            best = {f"best/{name[len('current/'):]}": values for name, values in current.items()}
        else:
            best = self.best.saved("best")
        arrays = {"history": self.history, **current, **best}
        scalars = {"step": self.step, "best_step": self.best_step, "stale": self.stale,
                   "best_score": self.best_score}
        return arrays, scalars

    @classmethod
    def from_arrays(cls, arrays, scalars):
        """The state that :meth:`to_arrays` gave."""
        current, best = (StepFactors.restored(arrays, prefix) for prefix in ("current", "best"))
        return cls(scalars["step"], current, best, scalars["best_step"], scalars["best_score"], scalars["stale"],
                   np.asarray(arrays["history"]).reshape(-1, 4))


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """Training ratings ``R (n_users, n_items)`` and validation ratings, in contiguous indices.

    Attributes
    ----------
    matrix : scipy.sparse.csr_matrix (n_users, n_items), the training ratings, cut into blocks when the fit
        starts; or None when ``sides`` holds them already
    validation : tuple (users (m,), items (m,), ratings (m,)) with ``matrix`` (m may be 0), or the count m of
        the held-out ratings that ``sides`` holds (the item side's ``held`` blocks)
    mu : float, the fixed global bias (0 when it is off)
    sides : tuple (by_user, by_item) of BlockedRatings placed where the fit runs, or None (``matrix``)
    """

    matrix: object
    validation: tuple | int
    mu: float
    sides: tuple | None = None

    @property
    def shape(self):
        """(n_users, n_items)."""
        if self.matrix is not None:
            return self.matrix.shape
        return len(self.sides[0].counts), len(self.sides[1].counts)

    @property
    def n_validation(self):
        """The count of validation ratings."""
        return self.validation if isinstance(self.validation, int) else len(self.validation[2])

    def held_by_item(self):
        """The validation ratings as a CSR matrix ``(n_items, n_users)`` (of ``matrix``'s data), or None without
        any."""
        import scipy.sparse as sp

        if not self.n_validation:
            return None
        users, items, ratings = self.validation
        n_users, n_items = self.shape
        return sp.csr_matrix((np.asarray(ratings, np.float64), (items, users)), shape=(n_items, n_users))


# ---------------------------------------------------------------------------------------- training

def validate_rank(rank, n_users, n_items, init):
    """A message saying why ``rank`` does not fit the data, or None when it does."""
    limit = min(n_users, n_items)
    if init == "svd" and rank >= limit:
        return f"rank {rank} needs more than {rank} users and items for the SVD init (have {n_users} x {n_items})"
    if rank > limit:
        return f"rank {rank} exceeds the {n_users} users x {n_items} items of the training ratings"
    return None


def _centred(data, feedback, client):
    """``R - mu`` over the observed ratings (ones for implicit feedback): a CSR matrix, or a LinearOperator whose
    products run over the blocks of ``data.sides`` (:meth:`BlockedRatings.products`)."""
    ones = feedback == "implicit"
    if data.matrix is not None:
        centred = data.matrix.copy()
        centred.data = np.ones(len(centred.data)) if ones else centred.data - data.mu
        return centred
    from scipy.sparse.linalg import LinearOperator

    by_user, by_item = data.sides
    return LinearOperator(data.shape, matvec=lambda x: by_user.products(client, np.ravel(x), ones, data.mu),
                          rmatvec=lambda y: by_item.products(client, np.ravel(y), ones, data.mu), dtype=np.float64)


def initial_items(data, params, rng, known=None, client=None):
    """The initial items' factors and biases ``(item_factors (n_items, k), item_bias (n_items,))``: seeded
    N(0, init_scale^2) draws or a truncated SVD of the ratings, biases zero. A step starts with the users'
    half-step, so the loop needs no initial users.

    The SVD init is ``Q = V sqrt(S)`` of ``R - mu = U S V^T`` over the observed ratings (of the preferences, 1 at
    every observed pair, for implicit feedback; ARPACK's start vector drawn from ``rng``), over the blocks of
    ``data.sides`` on ``client`` when the data has no matrix; ARPACK's vectors hold O(users) in this process.
    ``known`` (``(item_factors, item_bias)`` with NaN rows for the items it does not know) overrides the rows it
    knows: a warm start.
    """
    n_users, n_items = data.shape
    rank = params.rank
    if params.init == "svd":
        from scipy.sparse.linalg import svds

        _, s, vt = svds(_centred(data, params.feedback, client), k=rank, v0=rng.standard_normal(min(n_users, n_items)))
        items = vt.T * np.sqrt(s)
    else:
        items = params.init_scale * rng.standard_normal((n_items, rank))
    if known is None:
        return items, np.zeros(n_items)
    known_factors, known_bias = known
    return np.where(np.isnan(known_factors), items, known_factors), np.where(np.isnan(known_bias), 0.0, known_bias)


class HeldOutRMSE:
    """Judges factors by their RMSE on the validation ratings (lower is better), from their squared error that
    the item half-step's tasks computed (:meth:`_Sides.step`): the held-out ratings stay where the blocks
    are.

    Parameters
    ----------
    count : int, the validation ratings
    """

    name, lower_is_better = "RMSE", True

    def __init__(self, count):
        self.count = count

    def __len__(self):
        return self.count

    def __call__(self, client, factors, held_error):
        """``(squared error, RMSE)`` from the summed squared error ``held_error`` of ``factors``."""
        return held_error, float(np.sqrt(held_error / self.count))


class _Sides:
    """The training ratings on the workers, by user and by item, and the half-steps and losses over them. Both
    sides' solutions stay where they were solved (:class:`SolvedRows`): the job's process sends and receives
    sums, never factors, during the loop."""

    def __init__(self, client, data, params):
        from .dataset import Tasks

        self.client, self.data, self.params = client, data, params
        if data.sides is not None:
            self.by_user, self.by_item = data.sides
        else:
            matrix = data.matrix
            held = data.held_by_item() if params.feedback == "explicit" else None
            self.by_user = BlockedRatings.scatter(client, matrix, params.block_ratings, "users")
            self.by_item = BlockedRatings.scatter(client, matrix.T.tocsr(), params.block_ratings, "items", held)
        if client is not None:
            for side in (self.by_user, self.by_item):
                side.spread(client)  # each half-step's tasks take the other side's solution from their worker
        self.bounds = [side.row_bounds(client) for side in (self.by_user, self.by_item)]
        self.tasks = Tasks(client, "als-rows")
        self.implicit = params.feedback == "implicit"
        opts = params
        if self.implicit:
            self.halves = (ImplicitHalf(opts.alpha, opts.reg_lambda, opts.weighted_lambda, opts.lambda_exponent),) * 2
            self.biased = (False, False)
        else:
            self.biased = (opts.user_bias, opts.item_bias)
            self.halves = tuple(ExplicitHalf(opts.reg_lambda, opts.weighted_lambda, opts.lambda_exponent,
                                             opts.bias_lambda if with_bias else None) for with_bias in self.biased)

    def placed(self, factors):
        """``factors`` (StepFactors) with items given in this process (a start, a checkpoint) sent to every
        worker, their bias column kept only when the items have biases."""
        def place(rows):
            if rows is None or (rows.tasks.client is self.client and rows.with_bias == self.biased[1]):
                return rows
            return ReplicatedRows.placed(self.tasks, *rows.here(), self.biased[1])

        return dataclasses.replace(factors, items=place(factors.items), source=place(factors.source))

    def step(self, factors, step, with_error):
        """One ALS step from the items of ``factors`` (StepFactors): the users given the items, then the items
        given the users: ``(StepFactors, errors, sums)``. With ``with_error``, ``errors`` is ``(error, held
        error)`` from the item half-step's tasks (the error of :meth:`ExplicitHalf.error` or
        :meth:`ImplicitHalf.error`, and the validation ratings' squared error or None); else ``(None, None)``.
        ``sums``: :meth:`SolvedRows.sums` of both sides. A worker lost on the way: the whole step runs again, from
        the items that every worker holds."""
        from ..core.cluster import with_rebuilds

        def run(attempt):
            name = f"{self.tasks.run}-{step}-{attempt}"  # unique however many fits share the rating blocks
            for side in (self.by_user, self.by_item):
                side.rebuild(self.client, attempt)
            users = self._solve_users(factors.items, name)
            parts = self.by_item.submit(self.client, self.halves[1], self._shared(0, users, name), name, with_error)
            items, errors = self._split_parts(parts, with_error, name)
            whole = ReplicatedRows.stacked(items, f"items-{name}")
            sums = self.sums(users, items)  # everything submitted: one wait for all
            return users, whole.done(), _summed_errors(self.tasks.gather(errors)), self.tasks.gather(sums)

        if self.client is None:
            users, items, errors, sums = run(1)
        else:
            users, items, errors, sums = with_rebuilds(run, f"ALS step {step}", ADVICE)
        return StepFactors(items, factors.items, users), errors, sums

    def _solve_users(self, items, name):
        """The users' half-step given the items ``items`` (ReplicatedRows): SolvedRows."""
        shared = items.shared(self._stack(1), name)
        parts = self.by_user.submit(self.client, self.halves[0], shared, name, False)
        return SolvedRows(parts, self.bounds[0], self.biased[0], self.tasks)

    def _stack(self, side):
        """How the other side's half-step makes what it takes from the blocks of side ``side``'s solution:
        explicit ``(design, offset)`` (:func:`_stacked_design`), implicit ``(factors, Gram matrix)``
        (:func:`_stacked_with_gram`)."""
        if self.implicit:
            return _stacked_with_gram
        return functools.partial(_stacked_design, solved_bias=self.biased[side], ones=self.biased[1 - side],
                                 mu=self.data.mu)

    def _shared(self, side, solved, name):
        """What the other side's half-step takes of side ``side``'s solution ``solved`` (SolvedRows): made here,
        or on each worker (:func:`designs_on_workers`)."""
        if self.client is None:
            return self._stack(side)(solved.blocks)
        return designs_on_workers(self.client, self._stack(side), solved.blocks, f"{side}-{name}")

    def _split_parts(self, parts, with_error, name):
        """``(SolvedRows, errors)`` of the item half-step's ``parts`` (:meth:`BlockedRatings.submit`): the
        solutions stay where they are; ``errors``, each block's ``(error, held error)`` (futures, or values here;
        none without ``with_error``), for :func:`_summed_errors`."""
        if not with_error:
            return SolvedRows(parts, self.bounds[1], self.biased[1], self.tasks), []
        if self.client is None:
            solutions, errors = [p[0] for p in parts], [p[1:] for p in parts]
        else:
            solutions = [self.client.submit(operator.getitem, p, 0, key=f"als-items-{name}-{i}")
                         for i, p in enumerate(parts)]
            errors = [self.client.submit(_errors_of, p, key=f"als-error-{name}-{i}") for i, p in enumerate(parts)]
        return SolvedRows(solutions, self.bounds[1], self.biased[1], self.tasks), errors

    def solved_users(self, factors, name):
        """``factors`` (StepFactors) with their users solved, again from their source (the items themselves at
        step 0) when their solution is gone (a checkpoint's state, or a solution lost with a worker)."""
        from ..core.cluster import with_rebuilds

        if factors.users is not None and factors.users.alive():
            return factors

        def run(attempt):
            self.by_user.rebuild(self.client, attempt)
            users = self._solve_users(factors.source or factors.items, f"{self.tasks.run}-{name}-{attempt}")
            if self.client is not None:
                from distributed import wait

                wait(users.blocks)
                self.client.gather(users.blocks[:1])  # raises when a block was lost
            return users

        users = run(1) if self.client is None else with_rebuilds(run, "solving the users", ADVICE)
        return dataclasses.replace(factors, users=users)

    def sums(self, users, items):
        """``[users, items]``: :meth:`SolvedRows.sums` of both sides' solutions over their rating blocks, submitted
        (``self.tasks.gather`` gives the dicts)."""
        opts = self.params
        return [rows.sums(side.blocks, opts.weighted_lambda, opts.lambda_exponent, gram=self.implicit)
                for rows, side in ((users, self.by_user), (items, self.by_item))]

    def training_loss(self, error, sums):
        """The objective L from the item half-step's ``error``: the squared error (explicit) or the observed
        pairs' part, to which the implicit objective adds ``sum_{all u, i} (x_u . y_i)^2 = trace(X^T X Y^T Y)``;
        plus the penalties (``sums``, :meth:`sums`: :func:`penalty_sums` of the users and of the items)."""
        opts = self.params
        users, items = sums
        if self.implicit:
            error += float(np.einsum("ij,ij->", users["gram"], items["gram"]))
        return (error + opts.reg_lambda * (users["factors"] + items["factors"])
                + opts.bias_lambda * (users["bias"] + items["bias"]))


def _summed_errors(errors):
    """``(error, held error or None)`` summed over the blocks' ``errors``; ``(None, None)`` without any."""
    if not errors:
        return None, None
    held = [e[1] for e in errors if e[1] is not None]
    return float(np.sum([e[0] for e in errors])), float(np.sum(held)) if held else None


def _errors_of(part):
    """``(error, held error)`` of an item half-step's block result ``(solution, error, held error)``."""
    return part[1], part[2]


def fit_als(client, data, params, state, checkpoint=None, checkpoint_every=0, validation=None):
    """The training loop: ALS steps from ``state`` until ``max_steps`` or until patience runs out.

    Every ``eval_every`` steps the training loss and the validation score are computed and the best factors
    kept; every ``log_every`` steps a line is logged; every ``checkpoint_every`` steps ``checkpoint(state)``
    is called. Factors that are not finite stop the loop with FloatingPointError naming the step.

    Parameters
    ----------
    client : distributed.Client, or None to train in this process (the same blocks, so the same factors)
    data : TrainingData
    params : ALSParams
    state : TrainingState, from :meth:`TrainingState.start` or a checkpoint
    checkpoint : callable(TrainingState) or None
    checkpoint_every : int, 0 for never
    validation : callable ``(client, factors, held error) -> (squared error or NaN, score)`` with ``len()``
        (held-out pairs; 0: none), ``name`` and ``lower_is_better``, or None for :class:`HeldOutRMSE` of
        ``data``'s validation ratings (:class:`mixlib.recsys.ranking.RankingValidation` judges by a ranking
        metric)

    Returns
    -------
    final : TrainingState, where the loop stopped, its current and best factors with their users solved (both
        sides on the workers with a client: :class:`SolvedRows`)
    early_stopped : bool, patience ran out (the model converged after ``final.best_step``)
    """
    sides = _Sides(client, data, params)
    validation = HeldOutRMSE(data.n_validation) if validation is None else validation
    has_validation = len(validation) > 0
    current = sides.placed(state.current)
    best = current if state.best is state.current else sides.placed(state.best)
    state = dataclasses.replace(state, current=current, best=best)
    early = False
    while state.step < params.max_steps:
        step = state.step + 1
        evaluate = step % params.eval_every == 0 or step == params.max_steps
        current, (error, held_error), sums = sides.step(state.current, step, evaluate)
        if sums[0]["nonfinite"] or sums[1]["nonfinite"]:
            raise FloatingPointError(f"ALS step {step}: the factors are not finite; raise reg_lambda or lower rank")
        state = dataclasses.replace(state, step=step, current=current)
        if evaluate:
            scores = validation(client, current, held_error) if has_validation else (np.nan, np.nan)
            state = _evaluated(state, sides.training_loss(error, sums), *scores, validation.lower_is_better,
                               has_validation)
            if step % params.log_every == 0:
                _log_evaluation(state.history[-1], validation.name, has_validation)
        if checkpoint is not None and checkpoint_every and step % checkpoint_every == 0:
            checkpoint(state)
        if state.stale >= params.patience:
            early = True
            break
    current = sides.solved_users(state.current, "final-current")
    best = current if state.best is state.current else sides.solved_users(state.best, "final-best")
    return dataclasses.replace(state, current=current, best=best), early


def _log_evaluation(row, name, has_validation):
    step, train_loss, val_error, val_score = row
    if not has_validation:
        log.info("Iteration %d, Train Error: %.6g (no validation ratings)", step, train_loss)
    elif np.isnan(val_error):
        log.info("Iteration %d, Train Error: %.6g, Validation %s: %.6f", step, train_loss, name, val_score)
    else:
        log.info("Iteration %d, Train Error: %.6g, Validation Error: %.6g, Validation %s: %.6f", step, train_loss,
                 val_error, name, val_score)


def _evaluated(state, train_loss, val_error, val_score, lower_is_better, has_validation):
    """The state after an evaluation: history extended, best factors and patience counter updated."""
    history = np.vstack([state.history, [state.step, train_loss, val_error, val_score]])
    best = state.best_score
    better = best is None or (val_score < best if lower_is_better else val_score > best)
    if not has_validation or better:
        return dataclasses.replace(state, history=history, best=state.current, best_step=state.step,
                                   best_score=float(val_score) if has_validation else None, stale=0)
    return dataclasses.replace(state, history=history, stale=state.stale + 1)
