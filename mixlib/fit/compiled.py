"""Compiled per-point loops behind the k-means and Gaussian-mixture kernels (numba, without the GIL).

Each function is a pure loop over the points of one chunk that keeps only ``k``-sized scratch arrays: it
never forms the ``(n, k)`` distance or responsibility matrices that the numpy formulation needs, and it
releases the GIL, so that the threaded workers of the embedded cluster run their chunks in parallel
(scipy's ``vq`` and numpy's ``bincount`` hold it). On 2.3 million distinct colours and 16 centres, one
Lloyd pass took 52 ms here against 125 ms for ``vq`` plus four ``bincount``\\ s (one thread). Compiled code is
cached next to this file, so only the first run on a machine compiles.
"""

import math

import numba
import numpy as np

LOG_2PI = math.log(2 * math.pi)

_compiled = numba.njit(nogil=True, cache=True)
_inlined = numba.njit(nogil=True, cache=True, inline="always")  # helpers of the per-point loops


@_inlined
def _sq_distances(x, i, centres_t, out):
    """``out[j] = ||x_i - c_j||^2`` for every centre, with ``centres_t (D, k)`` the centres transposed."""
    for j in range(centres_t.shape[1]):
        out[j] = 0.0
    for e in range(centres_t.shape[0]):
        xe = x[i, e]
        for j in range(centres_t.shape[1]):
            diff = xe - centres_t[e, j]
            out[j] += diff * diff


@_inlined
def _first_min(values):
    """Index of the first smallest value (as scipy's ``vq`` breaks ties)."""
    best, smallest = 0, values[0]
    for j in range(1, len(values)):
        if values[j] < smallest:
            best, smallest = j, values[j]
    return best


@_compiled
def nearest(x, centres):
    """Nearest centre ``(n,)`` int64 (the first one on a tie) and squared distance ``(n,)`` of points
    ``x (n, D)`` to ``centres (k, D)``."""
    centres_t = np.ascontiguousarray(centres.T)
    labels = np.empty(x.shape[0], np.int64)
    sq_dist = np.empty(x.shape[0])
    scratch = np.empty(centres.shape[0])
    for i in range(x.shape[0]):
        _sq_distances(x, i, centres_t, scratch)
        labels[i] = _first_min(scratch)
        sq_dist[i] = scratch[labels[i]]
    return labels, sq_dist


@_inlined
def _sq_distance_to(x, i, point):
    """``||x_i - point||^2``."""
    total = 0.0
    for e in range(x.shape[1]):
        diff = x[i, e] - point[e]
        total += diff * diff
    return total


@_compiled
def plusplus_centres(x, weights, closest, uniforms):
    """Greedy k-means++ steps (the new centres' indices): for each row of ``uniforms`` (the draws of one centre),
    candidates ``searchsorted(cumsum(w * D), u * sum(w * D))``, and the one that lowers ``sum(w * D)`` most
    becomes a centre; ``closest`` (n,), the squared distance ``D`` of each point to its nearest centre so far, is
    updated in place.

    Parameters
    ----------
    x : ndarray (n, D) float64; weights : ndarray (n,) float64
    closest : ndarray (n,) float64
    uniforms : ndarray (centres, trials) float64 in [0, 1)

    Returns
    -------
    ndarray (centres,) int64, the index of each new centre in ``x``
    """
    n = x.shape[0]
    chosen = np.empty(uniforms.shape[0], np.int64)
    cumulative = np.empty(n)
    trial = np.empty(n)
    best = np.empty(n)
    for c in range(uniforms.shape[0]):
        potential = 0.0
        for i in range(n):
            potential += weights[i] * closest[i]
            cumulative[i] = potential
        best_cost = np.inf
        for t in range(uniforms.shape[1]):
            candidate = min(np.searchsorted(cumulative, uniforms[c, t] * potential), n - 1)
            cost = 0.0
            for i in range(n):
                trial[i] = min(closest[i], _sq_distance_to(x, i, x[candidate]))
                cost += weights[i] * trial[i]
            if cost < best_cost:
                best_cost, chosen[c] = cost, candidate
                best[:] = trial
        closest[:] = best
    return chosen


@_compiled
def lloyd_sums(x, weights, centres):
    """Per centre: the weight ``(k,)`` and weighted sum ``(k, D)`` of the points nearest to it, and the
    weighted sum of squared distances of the points ``x (n, D)`` to their nearest centre."""
    k, dims = centres.shape
    centres_t = np.ascontiguousarray(centres.T)
    counts = np.zeros(k)
    sums = np.zeros((k, dims))
    inertia = 0.0
    scratch = np.empty(k)
    for i in range(x.shape[0]):
        _sq_distances(x, i, centres_t, scratch)
        label = _first_min(scratch)
        w = weights[i]
        counts[label] += w
        for e in range(dims):
            sums[label, e] += w * x[i, e]
        inertia += w * scratch[label]
    return counts, sums, inertia


BOUND_MARGIN = 1e-9  # relative slack on the bounds of :func:`bounded_lloyd_sums`, far above their rounding errors


@_compiled
def _centre_neighbours(centres):
    """The distance between every two centres ``(k, k)`` and, for each centre, the others nearest first
    ``(k, k - 1)`` int64."""
    k = centres.shape[0]
    gaps = np.zeros((k, k))
    for j in range(k):
        for m in range(j + 1, k):
            gaps[j, m] = gaps[m, j] = math.sqrt(_sq_distance_to(centres, j, centres[m]))
    order = np.empty((k, k - 1), np.int64)
    for j in range(k):
        row = np.argsort(gaps[j], kind="mergesort")
        order[j] = row[row != j]
    return gaps, order


@_inlined
def _largest_two(values):
    """The index of the first largest value and the largest of the others."""
    top = _first_min(-values)
    runner_up = 0.0
    for j in range(len(values)):
        if j != top:
            runner_up = max(runner_up, values[j])
    return top, runner_up


@_inlined
def _ring_scan(x, i, centres, own_label, own_sq, gaps, order):
    """Nearest centre (the first one on a tie), its squared distance and the distance to the second nearest of
    point ``x_i``, by its centre's neighbours nearest first from ``own_label`` at squared distance ``own_sq``.

    A centre ``j`` at distance ``g`` from centre ``a`` is at least ``g - d_a`` from the point (triangle inequality),
    so the scan stops at the first neighbour with ``g - d_a`` beyond the second smallest distance found: no later
    one can be nearest, tie or be second.
    """
    own = math.sqrt(own_sq)
    best, best_sq, second_sq = own_label, own_sq, np.inf
    for m in range(order.shape[1]):
        j = order[own_label, m]
        reach = gaps[own_label, j] - own
        if reach > 0.0 and reach * reach > second_sq * (1.0 + BOUND_MARGIN):
            break
        sq = _sq_distance_to(x, i, centres[j])
        if sq < best_sq or (sq == best_sq and j < best):
            best, best_sq, second_sq = j, sq, best_sq
        elif sq < second_sq:
            second_sq = sq
    return best, best_sq, math.sqrt(second_sq)


@_compiled
def bounded_lloyd_sums(x, weights, centres, shifts, labels, lower):
    """:func:`lloyd_sums` with Hamerly's bounds (2010): the same labels, so the same bits, with most points compared
    with their own centre only, and the others with a few of its neighbours.

    A point keeps its label ``a`` when its distance ``d_a`` to centre ``a`` is below ``max(s_a, lower)``: ``s_a``,
    half the distance from centre ``a`` to its nearest other centre (then no centre is nearer, by the triangle
    inequality), or ``lower``, a lower bound on its distance to every other centre. Otherwise a scan of ``a``'s
    neighbours (:func:`_ring_scan`) finds the nearest centre and sets ``lower`` to the distance to the second
    nearest; when the centres move by ``shifts``, every ``lower`` drops by the largest shift of a centre other than
    the point's own. The tests are strict, with a relative margin ``BOUND_MARGIN``, so a point that may be tied
    with another centre is scanned and takes the first nearest centre, as :func:`lloyd_sums` does.

    Parameters
    ----------
    x : ndarray (n, D) float64; weights : ndarray (n,) float64
    centres : ndarray (k, D) float64
    shifts : ndarray (k,) float64, how far each centre moved since ``labels`` and ``lower`` were set
    labels : ndarray (n,) int64, updated in place (any labels, with ``lower`` 0, before the first call)
    lower : ndarray (n,) float64, updated in place

    Returns
    -------
    counts (k,), sums (k, D) and inertia, as :func:`lloyd_sums`
    """
    k, dims = centres.shape
    gaps, order = _centre_neighbours(centres)
    half_gap = np.full(k, np.inf)
    for j in range(k):
        for m in range(k):
            if m != j:
                half_gap[j] = min(half_gap[j], 0.5 * gaps[j, m])
    top, runner_up = _largest_two(shifts)
    counts = np.zeros(k)
    sums = np.zeros((k, dims))
    inertia = 0.0
    for i in range(x.shape[0]):
        label = labels[i]
        lower[i] -= runner_up if label == top else shifts[top]
        own = _sq_distance_to(x, i, centres[label])
        bound = max(half_gap[label], lower[i]) * (1.0 - BOUND_MARGIN)
        if not (bound > 0.0 and own < bound * bound):
            label, own, lower[i] = _ring_scan(x, i, centres, label, own, gaps, order)
            labels[i] = label
        w = weights[i]
        counts[label] += w
        for e in range(dims):
            sums[label, e] += w * x[i, e]
        inertia += w * own
    return counts, sums, inertia


@_inlined
def _joint_row(x, i, log_norms, mean_terms, prec_chol, out):
    """``out[j] = log(pi_j N(x_i | mu_j, Sigma_j))``.

    With ``Sigma_j^-1 = U_j U_j^T`` (``U_j`` upper triangular) and ``y = (x_i - mu_j) U_j = x_i U_j - mu_j U_j``:
    ``log(pi_j N) = log pi_j + sum_e log U_j[e, e] - (D log 2 pi + ||y||^2) / 2``; ``log_norms[j]`` holds
    the terms that do not depend on ``x_i`` and ``mean_terms[j]`` is ``mu_j U_j`` (see :func:`_point_free`).
    """
    dims = mean_terms.shape[1]
    for j in range(mean_terms.shape[0]):
        sq = 0.0
        for e in range(dims):
            y = 0.0
            for d in range(e + 1):
                y += x[i, d] * prec_chol[j, d, e]
            y -= mean_terms[j, e]
            sq += y * y
        out[j] = log_norms[j] - 0.5 * sq


@_compiled
def _point_free(log_weights, means, prec_chol):
    """The terms of :func:`_joint_row` that do not depend on the point: ``log pi_j + log det U_j - D log(2 pi) / 2``
    ``(k,)`` and ``mu_j U_j`` ``(k, D)``."""
    k, dims = means.shape
    log_norms = log_weights - 0.5 * dims * LOG_2PI
    mean_terms = np.zeros((k, dims))
    for j in range(k):
        for e in range(dims):
            log_norms[j] += math.log(prec_chol[j, e, e])
            for d in range(e + 1):
                mean_terms[j, e] += means[j, d] * prec_chol[j, d, e]
    return log_norms, mean_terms


@_compiled
def joint_log_prob(x, log_weights, means, prec_chol):
    """``log(pi_j N(x_i | mu_j, Sigma_j))``, ``(n, k)``, for points ``x (n, D)``, log-weights ``(k,)``,
    means ``(k, D)`` and upper-triangular precision Cholesky factors ``(k, D, D)``."""
    log_norms, mean_terms = _point_free(log_weights, means, prec_chol)
    out = np.empty((x.shape[0], means.shape[0]))
    for i in range(x.shape[0]):
        _joint_row(x, i, log_norms, mean_terms, prec_chol, out[i])
    return out


@_compiled
def em_sums(x, weights, log_weights, means, prec_chol):
    """The E-step's sufficient statistics of weighted points ``x (n, D)``, ``weights (n,)``.

    With responsibilities ``r_ij = pi_j N(x_i | j) / p(x_i)`` and ``log p(x_i) = log sum_j exp(log(pi_j N))``
    (shifted by the largest term, so nothing overflows): ``nk (k,) = sum_i w_i r_ij``,
    ``sx (k, D) = sum_i w_i r_ij x_i``, ``sxx (k, D, D) = sum_i w_i r_ij x_i x_i^T`` and
    ``loglik = sum_i w_i log p(x_i)``.
    """
    k, dims = means.shape
    log_norms, mean_terms = _point_free(log_weights, means, prec_chol)
    nk = np.zeros(k)
    sx = np.zeros((k, dims))
    sxx = np.zeros((k, dims, dims))
    loglik = 0.0
    joint = np.empty(k)
    for i in range(x.shape[0]):
        _joint_row(x, i, log_norms, mean_terms, prec_chol, joint)
        top = joint.max()
        total = 0.0
        for j in range(k):
            joint[j] = math.exp(joint[j] - top)  # now pi_j N(x_i | j) / exp(top)
            total += joint[j]
        loglik += weights[i] * (top + math.log(total))
        for j in range(k):
            r = weights[i] * joint[j] / total
            nk[j] += r
            for d in range(dims):
                sx[j, d] += r * x[i, d]
                for e in range(d + 1):
                    sxx[j, d, e] += r * x[i, d] * x[i, e]
    for d in range(dims):
        for e in range(d):
            sxx[:, e, d] = sxx[:, d, e]
    return nk, sx, sxx, loglik


def warm_up():
    """Load every compiled loop of this module (from the cache, or compile it), so that a job can spend that time
    in a thread while it decodes its input instead of in its first tasks."""
    points, weights, centres = np.zeros((2, 3)), np.ones(2), np.zeros((2, 3))
    prec_chol = np.broadcast_to(np.eye(3), (2, 3, 3)).copy()
    nearest(points, centres)
    plusplus_centres(points, weights, np.ones(2), np.zeros((1, 2)))
    lloyd_sums(points, weights, centres)
    joint_log_prob(points, np.zeros(2), centres, prec_chol)
    em_sums(points, weights, np.zeros(2), centres, prec_chol)
