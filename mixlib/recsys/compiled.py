"""Compiled per-row loops of the ALS half-steps, explicit and implicit, and of the bias-only baseline's sweeps
(numba, without the GIL).

One row's system is small (``d x d``, d the rank) and its list of interactions is read once: the loop builds the
system from the shared Gram matrix and the row's interactions, factorises it and solves it in place, with no
padded copy of the row's factors (the grouped numpy formulation gathered ``(rows, longest list, d)`` arrays and
spent most of its time there). Inner loops run over independent outputs (a row of the triangle, four dot
products at once, four outer products per pass over the triangle), never along one long sum, so that the
compiler vectorises them without reordering any sum: the bits do not depend on the CPU. The loops release the
GIL, so the threaded workers of the embedded cluster solve their blocks in parallel. Compiled code is cached next
to this file, so only the first run on a machine compiles.
"""

import numba
import numpy as np

_compiled = numba.njit(nogil=True, cache=True)
_inlined = numba.njit(nogil=True, cache=True, inline="always")


@_compiled
def implicit_rows(indptr, indices, values, factors, gram, alpha, penalty):
    """Solve every row of a CSR block of implicit feedback (the system of
    :func:`mixlib.recsys.als.solve_rows_implicit`)::

        (G + sum_{i in R(u)} alpha r_ui y_i y_i^T + penalty_u I) x_u = sum_{i in R(u)} (1 + alpha r_ui) y_i

    Parameters
    ----------
    indptr : ndarray (n_rows + 1,) int; indices : ndarray (nnz,) int; values : ndarray (nnz,) float64, ``r_ui``
    factors : ndarray (n_other, d) float64, ``Y``; gram : ndarray (d, d) float64, ``Y^T Y``
    alpha : float
    penalty : ndarray (n_rows,) float64 > 0, each row's ``lambda w_u``

    Returns
    -------
    ndarray (n_rows, d) float64; a row without interactions gets zeros
    """
    n_rows, d = len(indptr) - 1, factors.shape[1]
    out = np.zeros((n_rows, d))
    system = np.empty((d, d))  # its upper triangle
    rhs = np.empty(d)
    weights = np.empty(indptr[-1] - indptr[0])
    targets = np.empty(len(weights))
    for k in range(len(weights)):
        weights[k] = alpha * values[indptr[0] + k]
        targets[k] = 1.0 + weights[k]
    for u in range(n_rows):
        if indptr[u] == indptr[u + 1]:
            continue
        for p in range(d):
            rhs[p] = 0.0
            for q in range(p, d):
                system[p, q] = gram[p, q]
            system[p, p] += penalty[u]
        _add_outer_products(system, rhs, factors, indices, weights, targets, indptr[u], indptr[u + 1], indptr[0])
        _cholesky_solve(system, rhs)
        out[u] = rhs
    return out


@_compiled
def explicit_rows(indptr, indices, ratings, design, offset, penalty, bias_penalty, row_errors):
    """Solve every row of a CSR block of explicit ratings (the system of :func:`mixlib.recsys.als.solve_rows`)::

        (X_u^T X_u + D_u) s_u = X_u^T t_u,   t_ui = r_ui - offset_i,   X_u = rows design[i] for i in R(u)

    with ``D_u = diag(penalty_u, ..., penalty_u, bias_penalty)`` (the last column a bias with a penalty of its own),
    or ``penalty_u I`` when ``bias_penalty`` is 0. A row with fewer ratings ``n`` than unknowns ``d`` is solved in
    the dual, an ``n x n`` system: with the bias column scaled by ``c = sqrt(penalty_u / bias_penalty)`` (``b = c
    b'``) the penalty is the scalar ``penalty_u``, and ``s' = X'^T (X' X'^T + penalty_u I)^-1 t``.

    Parameters
    ----------
    indptr : ndarray (n_rows + 1,) int; indices : ndarray (nnz,) int; ratings : ndarray (nnz,) float64
    design : ndarray (n_other, d) float64; offset : ndarray (n_other,) float64
    penalty : ndarray (n_rows,) float64 > 0, each row's ``lambda w_u``
    bias_penalty : float, > 0 for a bias in the last column, else 0
    row_errors : ndarray (n_rows,) float64, filled with each row's squared error ``sum_i (t_ui - x_i . s_u)^2``
        after its solve (the row's design rows are still in cache), or (0,) for none

    Returns
    -------
    ndarray (n_rows, d) float64; a row without ratings gets zeros
    """
    n_rows, d = len(indptr) - 1, design.shape[1]
    out = np.zeros((n_rows, d))
    system = np.empty((d, d))  # its upper triangle (d x d in the primal, n x n in the dual)
    rhs = np.empty(d)
    scaled = np.empty((d, d))  # a short row's design rows, the bias scaled
    ones = np.ones(indptr[-1] - indptr[0])
    targets = np.empty(len(ones))
    for k in range(len(ones)):
        targets[k] = ratings[indptr[0] + k] - offset[indices[indptr[0] + k]]
    for u in range(n_rows):
        start, n = indptr[u], indptr[u + 1] - indptr[u]
        if n == 0:
            continue
        if n < d:
            _solve_dual(system, rhs, scaled, design, indices, targets, start - indptr[0], start, n, penalty[u],
                        bias_penalty, out[u])
        else:
            for p in range(d):
                rhs[p] = 0.0
                for q in range(p, d):
                    system[p, q] = 0.0
                system[p, p] = penalty[u]
            if bias_penalty > 0:
                system[d - 1, d - 1] = bias_penalty
            _add_outer_products(system, rhs, design, indices, ones, targets, start, start + n, indptr[0])
            _cholesky_solve(system, rhs)
            out[u] = rhs
        if len(row_errors):
            row_errors[u] = _squared_error(out[u], design, indices, targets, start, start + n, indptr[0])
    return out


@_inlined
def _squared_error(solution, rows, indices, targets, start, stop, first):
    """``sum_k (targets_k - rows[indices[k]] . solution)^2`` for k in ``start:stop`` (``targets`` indexed from
    ``first``)."""
    total = 0.0
    for k in range(start, stop):
        x = rows[indices[k]]
        predicted = 0.0
        for p in range(len(solution)):
            predicted += x[p] * solution[p]
        residual = targets[k - first] - predicted
        total += residual * residual
    return total


@_inlined
def _solve_dual(system, rhs, scaled, design, indices, targets, first, start, n, penalty, bias_penalty, out):
    """A short row's solution ``out (d,)`` from its ``n < d`` ratings (``indices[start:start + n]``, their targets
    ``targets[first:first + n]``) in the dual: ``s' = X'^T (X' X'^T + penalty I)^-1 t`` (see
    :func:`explicit_rows`)."""
    d = len(out)
    scale = np.sqrt(penalty / bias_penalty) if bias_penalty > 0 else 1.0
    for k in range(n):
        x = design[indices[start + k]]
        for p in range(d):
            scaled[k, p] = x[p]
        if bias_penalty > 0:
            scaled[k, d - 1] *= scale
        rhs[k] = targets[first + k]
    for a in range(n):  # X' X'^T, upper triangle, four dot products at a time (independent sums)
        row = scaled[a]
        b = a
        while b + 4 <= n:
            y0, y1, y2, y3 = scaled[b], scaled[b + 1], scaled[b + 2], scaled[b + 3]
            s0 = s1 = s2 = s3 = 0.0
            for p in range(d):
                s0 += row[p] * y0[p]
                s1 += row[p] * y1[p]
                s2 += row[p] * y2[p]
                s3 += row[p] * y3[p]
            system[a, b], system[a, b + 1], system[a, b + 2], system[a, b + 3] = s0, s1, s2, s3
            b += 4
        for c in range(b, n):
            value = 0.0
            other = scaled[c]
            for p in range(d):
                value += row[p] * other[p]
            system[a, c] = value
        system[a, a] += penalty
    _cholesky_solve(system[:n, :n], rhs[:n])
    for p in range(d):
        out[p] = 0.0
    for k in range(n):
        row, weight = scaled[k], rhs[k]
        for p in range(d):
            out[p] += row[p] * weight
    if bias_penalty > 0:
        out[d - 1] *= scale


@_inlined
def _add_outer_products(system, rhs, rows, indices, weights, targets, start, stop, first):
    """``system += sum_k weights_k x_k x_k^T`` (its upper triangle) and ``rhs += sum_k targets_k x_k`` over ``x_k =
    rows[indices[k]]`` for k in ``start:stop`` (``weights`` and ``targets`` indexed from ``first``), four products
    at a time: each pass over the triangle adds four, so it is read and written a quarter as often."""
    d = len(rhs)
    k = start
    while k + 4 <= stop:
        x0, x1, x2, x3 = rows[indices[k]], rows[indices[k + 1]], rows[indices[k + 2]], rows[indices[k + 3]]
        j = k - first
        w0, w1, w2, w3 = weights[j], weights[j + 1], weights[j + 2], weights[j + 3]
        t0, t1, t2, t3 = targets[j], targets[j + 1], targets[j + 2], targets[j + 3]
        for p in range(d):
            rhs[p] += t0 * x0[p] + t1 * x1[p] + t2 * x2[p] + t3 * x3[p]
            a0, a1, a2, a3 = w0 * x0[p], w1 * x1[p], w2 * x2[p], w3 * x3[p]
            for q in range(p, d):
                system[p, q] += a0 * x0[q] + a1 * x1[q] + a2 * x2[q] + a3 * x3[q]
        k += 4
    while k < stop:
        x = rows[indices[k]]
        w, t = weights[k - first], targets[k - first]
        for p in range(d):
            rhs[p] += t * x[p]
            a = w * x[p]
            for q in range(p, d):
                system[p, q] += a * x[q]
        k += 1


@_inlined
def _cholesky_solve(upper, rhs):
    """Solve ``A x = rhs`` in place for a positive definite ``A`` given by its upper triangle ``upper (d, d)``
    (overwritten by its Cholesky factor ``U``, ``A = U^T U``); ``rhs (d,)`` becomes ``x``.

    The factor and the forward solve go row by row of ``U``, each row updated by the rows above it, so that the
    inner loops run along rows (they vectorise); the backward solve is a dot product per row."""
    d = len(rhs)
    for j in range(d):
        row = upper[j]
        pivot = np.sqrt(row[j])
        for i in range(j, d):
            row[i] /= pivot
        rhs[j] /= pivot
        for k in range(j + 1, d):  # rows below: A_k -= U_jk U_j, and the forward solve's U^T z = rhs
            factor = row[k]
            below = upper[k]
            for i in range(k, d):
                below[i] -= factor * row[i]
            rhs[k] -= factor * rhs[j]
    for i in range(d - 1, -1, -1):  # U x = z
        value = rhs[i]
        for k in range(i + 1, d):
            value -= upper[i, k] * rhs[k]
        rhs[i] = value / upper[i, i]


@_compiled
def baseline_sweep_rows(users, items, values, part, start, item_bias, first, mu, reg_user, n_users, n_items):
    """One sweep of the bias-only baseline over a shard's training ratings (``part`` 0), in row order (the sums of
    ``np.bincount`` in the same order, so the same bits)::

        b_u = sum_i (r_ui - mu - b_i) / (reg_user + |R(u)|),   s_i = sum_u (r_ui - mu - b_u)

    Parameters
    ----------
    users : ndarray (n,) int, from ``start``; items : ndarray (n,) int; values : ndarray (n,) float64
    part : ndarray (n,) int8, 0 for a training rating
    item_bias : ndarray (n_items,) float64, ``b_i``, ignored when ``first`` (the user biases are then zeros)
    mu, reg_user : float; n_users : int, the shard's users

    Returns
    -------
    user_bias : ndarray (n_users,) float64; item_sums : ndarray (n_items,) float64, ``s_i``
    """
    user_bias = np.zeros(n_users)
    if not first:
        counts = np.zeros(n_users, dtype=np.int64)
        for k in range(len(users)):
            if part[k] == 0:
                u = users[k] - start
                user_bias[u] += values[k] - mu - item_bias[items[k]]
                counts[u] += 1
        for u in range(n_users):
            user_bias[u] /= counts[u] + reg_user
    item_sums = np.zeros(n_items)
    for k in range(len(users)):
        if part[k] == 0:
            item_sums[items[k]] += values[k] - mu - user_bias[users[k] - start]
    return user_bias, item_sums


@_compiled
def gram_rows(factors):
    """``Y^T Y`` ``(d, d)`` of ``factors (n, d)`` float64, summed row after row (each row's outer product added
    to the upper triangle, then mirrored): the same bits in any process, whatever its BLAS and threads."""
    n, d = factors.shape
    out = np.zeros((d, d))
    for r in range(n):
        x = factors[r]
        for p in range(d):
            a = x[p]
            row = out[p]
            for q in range(p, d):
                row[q] += a * x[q]
    for p in range(d):
        for q in range(p):
            out[p, q] = out[q, p]
    return out
