"""Compiled per-row loops of the implicit-feedback half-step (numba, without the GIL).

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
