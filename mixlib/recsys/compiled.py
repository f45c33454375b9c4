"""Compiled per-row loops of the ALS half-steps, explicit and implicit (numba, without the GIL).

One row's system is small (``d x d``, d the rank) and its list of interactions is read once: the loop builds the
system from the shared Gram matrix and the row's interactions, factorises it and solves it in place, with no
padded copy of the row's factors (the grouped numpy formulation gathered ``(rows, longest list, d)`` arrays and
spent most of its time there). It releases the GIL, so the threaded workers of the embedded cluster solve their
blocks in parallel. Compiled code is cached next to this file, so only the first run on a machine compiles.
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
    system = np.empty((d, d))  # its lower triangle
    rhs = np.empty(d)
    for u in range(n_rows):
        if indptr[u] == indptr[u + 1]:
            continue
        for p in range(d):
            rhs[p] = 0.0
            for q in range(p + 1):
                system[p, q] = gram[p, q]
            system[p, p] += penalty[u]
        for k in range(indptr[u], indptr[u + 1]):
            y = factors[indices[k]]
            weight = alpha * values[k]
            for p in range(d):
                rhs[p] += (1.0 + weight) * y[p]
                wy = weight * y[p]
                for q in range(p + 1):
                    system[p, q] += wy * y[q]
        _cholesky_solve(system, rhs)
        out[u] = rhs
    return out


@_compiled
def explicit_rows(indptr, indices, ratings, design, offset, penalty, bias_penalty):
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

    Returns
    -------
    ndarray (n_rows, d) float64; a row without ratings gets zeros
    """
    n_rows, d = len(indptr) - 1, design.shape[1]
    out = np.zeros((n_rows, d))
    system = np.empty((d, d))  # its lower triangle (d x d in the primal, n x n in the dual)
    rhs = np.empty(d)
    scaled = np.empty((d, d))  # a short row's design rows, the bias scaled
    for u in range(n_rows):
        start, n = indptr[u], indptr[u + 1] - indptr[u]
        if n == 0:
            continue
        scale = np.sqrt(penalty[u] / bias_penalty) if bias_penalty > 0 else 1.0
        if n < d:
            for k in range(n):
                for p in range(d):
                    scaled[k, p] = design[indices[start + k], p]
                if bias_penalty > 0:
                    scaled[k, d - 1] *= scale
            for a in range(n):
                rhs[a] = ratings[start + a] - offset[indices[start + a]]
                for b in range(a + 1):
                    value = 0.0
                    for p in range(d):
                        value += scaled[a, p] * scaled[b, p]
                    system[a, b] = value
                system[a, a] += penalty[u]
            _cholesky_solve(system[:n, :n], rhs[:n])
            for p in range(d):
                value = 0.0
                for k in range(n):
                    value += scaled[k, p] * rhs[k]
                out[u, p] = value
            if bias_penalty > 0:
                out[u, d - 1] *= scale
            continue
        for p in range(d):
            rhs[p] = 0.0
            for q in range(p + 1):
                system[p, q] = 0.0
            system[p, p] = penalty[u]
        if bias_penalty > 0:
            system[d - 1, d - 1] = bias_penalty
        for k in range(start, start + n):
            x = design[indices[k]]
            target = ratings[k] - offset[indices[k]]
            for p in range(d):
                rhs[p] += target * x[p]
                for q in range(p + 1):
                    system[p, q] += x[p] * x[q]
        _cholesky_solve(system, rhs)
        out[u] = rhs
    return out


@_inlined
def _cholesky_solve(lower, rhs):
    """Solve ``A x = rhs`` in place for a positive definite ``A`` given by its lower triangle ``lower (d, d)``
    (overwritten by its Cholesky factor ``L``, ``A = L L^T``); ``rhs (d,)`` becomes ``x``."""
    d = len(rhs)
    for j in range(d):
        pivot = lower[j, j]
        for k in range(j):
            pivot -= lower[j, k] * lower[j, k]
        pivot = np.sqrt(pivot)
        lower[j, j] = pivot
        for i in range(j + 1, d):
            value = lower[i, j]
            for k in range(j):
                value -= lower[i, k] * lower[j, k]
            lower[i, j] = value / pivot
    for i in range(d):  # L z = rhs
        value = rhs[i]
        for k in range(i):
            value -= lower[i, k] * rhs[k]
        rhs[i] = value / lower[i, i]
    for i in range(d - 1, -1, -1):  # L^T x = z
        value = rhs[i]
        for k in range(i + 1, d):
            value -= lower[k, i] * rhs[k]
        rhs[i] = value / lower[i, i]
