"""k-means on weighted points: k-means++ initialisation, Lloyd iterations and mini-batch k-means.

The kernels at the top are pure functions of one chunk of points (numpy, and the compiled loops of
:mod:`mixlib.fit.compiled`), with no Dask inside. :class:`~mixlib.fit.points.WeightedPoints` holds the data on
the cluster and runs tree reductions of kernel statistics over it. :func:`fit_kmeans` owns the iteration loops,
which run on the client and move only ``k x D`` numbers per iteration.

Every routine takes weighted points ``(x, w)``: a pixel's colour weighted by its count in the image
gives exactly the same centres as every pixel on its own.
"""

import dataclasses
import functools
import logging

import numpy as np

from ..core.reduce import add_stats, local_tree
from .points import LocalPoints, WeightedPoints, weighted_points

log = logging.getLogger("mixlib")

PLUSPLUS_STEP = 256  # k-means++ centres chosen between two progress reports
BOUNDED_MAX_K = 4096  # BoundedAssignment's centre gaps and orders, (k, k) each, take 16 k^2 bytes: 256 MiB here

# ----------------------------------------------------------------------------------------- kernels

def nearest_centres(x, centres):
    """Index of and squared distance to the nearest centre of each point.

    Parameters
    ----------
    x : ndarray (n, D) float64
    centres : ndarray (k, D) float64

    Returns
    -------
    labels : ndarray (n,) intp, the first nearest centre on a tie
    sq_dist : ndarray (n,) float64
    """
    from .loops import nearest

    labels, sq_dist = nearest(contiguous(x), contiguous(centres))
    return labels.astype(np.intp, copy=False), sq_dist


def contiguous(array):
    """``array`` as C-contiguous float64 (what the compiled loops of :mod:`mixlib.fit.compiled` are built for)."""
    return np.ascontiguousarray(array, dtype=np.float64)


def lloyd_chunk(x, weights, centres):
    """Lloyd statistics of one chunk: assign each point to its nearest centre.

    Parameters
    ----------
    x : ndarray (n, D) float64
    weights : ndarray (n,) float64
    centres : ndarray (k, D) float64

    Returns
    -------
    dict with ``counts`` (k,) total weight per centre, ``sums`` (k, D) weighted sum of the points per
    centre and ``inertia`` () the weighted sum of squared distances to the nearest centre.
    """
    from .loops import lloyd_sums

    counts, sums, inertia = lloyd_sums(contiguous(x), contiguous(weights), contiguous(centres))
    return {"counts": counts, "sums": sums, "inertia": inertia}


def far_points_chunk(x, weights, centres, count):
    """The ``count`` points of a chunk farthest from their nearest centre, to re-seed empty clusters.

    Returns
    -------
    dict with ``dist`` (m,), ``points`` (m, D), ``weights`` (m,) and ``labels`` (m,), m = min(count, n)
    """
    labels, sq_dist = nearest_centres(x, centres)
    m = min(count, len(x))
    far = np.argpartition(sq_dist, len(x) - m)[len(x) - m:]
    return {"dist": sq_dist[far], "points": x[far], "weights": weights[far], "labels": labels[far]}


def merge_far_points(parts, count):
    """Keep the ``count`` farthest points of several :func:`far_points_chunk` results, farthest first."""
    merged = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    keep = np.argsort(-merged["dist"], kind="stable")[:count]
    return {key: value[keep] for key, value in merged.items()}


def centres_from_stats(stats, far, previous, fixed=0):
    """New centres from merged Lloyd statistics, re-seeding empty clusters.

    Each empty cluster takes one of the points farthest from their centre (the farthest first), which
    leaves its old cluster, as scikit-learn does. A cluster left with no weight by that keeps its
    previous centre (it is re-seeded at the next iteration).

    Parameters
    ----------
    stats : dict from :func:`lloyd_chunk` merged with :func:`mixlib.core.reduce.add_stats`
    far : dict from :func:`merge_far_points` with at least as many points as empty clusters (but the fixed
        ones), or None when none is empty
    previous : ndarray (k, D), the centres the statistics were computed with
    fixed : int, the first ``fixed`` centres never move (and are not re-seeded when empty)

    Returns
    -------
    ndarray (k, D) float64
    """
    counts, sums = stats["counts"].copy(), stats["sums"].copy()
    for cluster, i in zip(empty_clusters(counts, fixed), range(len(far["dist"]) if far else 0)):
        point, weight, old = far["points"][i], far["weights"][i], far["labels"][i]
        sums[old] -= weight * point
        counts[old] -= weight
        sums[cluster] = weight * point
        counts[cluster] = weight
    centres = previous.copy()
    filled = counts > 0
    filled[:fixed] = False
    centres[filled] = sums[filled] / counts[filled, None]
    return centres


def empty_clusters(counts, fixed=0):
    """The clusters ``(e,)`` with no weight that are re-seeded: every empty one but the ``fixed`` first."""
    return np.flatnonzero(counts[fixed:] == 0) + fixed


def kmeans_plusplus(x, weights, k, rng, progress=None, fixed=None):
    """Greedy k-means++ seeding on weighted points (Arthur & Vassilvitskii 2007, with local trials).

    Each new centre is the best of ``2 + log k`` candidates drawn with probability proportional to
    ``w * D(x)^2``, the one that lowers the weighted potential most, as scikit-learn does. The steps run in a
    compiled loop (:func:`mixlib.fit.compiled.plusplus_centres`), ``PLUSPLUS_STEP`` centres at a time between two
    progress reports.

    Parameters
    ----------
    x : ndarray (n, D) float64, n >= k
    weights : ndarray (n,) float64, positive
    k : int
    rng : numpy.random.Generator
    progress : callable ``(centre, stage=, total=)`` or None, told of the centres chosen
    fixed : ndarray (f, D) or None, centres given: the first f, from which the others are drawn (no first draw)

    Returns
    -------
    ndarray (k, D) float64
    """
    from .loops import plusplus_centres

    x, weights = contiguous(x), contiguous(weights)
    n_trials = 2 + int(np.log(k))
    if fixed is None or not len(fixed):
        first = rng.choice(len(x), p=weights / weights.sum())
        closest = ((x - x[first]) ** 2).sum(axis=1)
        given, chosen = x[:0], [first]
    else:
        closest = np.min([((x - centre) ** 2).sum(axis=1) for centre in fixed], axis=0)
        given, chosen = contiguous(fixed), []
    drawn = k - len(given) - len(chosen)
    uniforms = rng.uniform(size=(drawn, n_trials))  # the draws of every centre, in the order they are used
    for start in range(0, drawn, PLUSPLUS_STEP):
        chosen.extend(plusplus_centres(x, weights, closest, uniforms[start:start + PLUSPLUS_STEP]))
        if progress is not None:
            progress(len(given) + len(chosen), stage="k-means++ centre", total=k)
    return np.vstack([given, x[np.asarray(chosen, dtype=np.int64)]])


def minibatch_update(centres, seen, batch):
    """One mini-batch step with per-centre learning rates (Sculley 2010).

    Each point of the batch moves its nearest centre c by ``eta = 1 / v_c`` towards itself, where
    ``v_c`` counts the points centre c has seen; over the batch this is the running mean
    ``c <- (v_c c + sum of the batch points assigned to c) / (v_c + n_c)``.

    Parameters
    ----------
    centres : ndarray (k, D) float64
    seen : ndarray (k,) float64, points seen per centre so far (``v``)
    batch : ndarray (b, D) float64, points drawn with probability proportional to their weight

    Returns
    -------
    centres : ndarray (k, D), seen : ndarray (k,), mean squared distance of the batch to the old centres
    """
    k, dims = centres.shape
    labels, sq_dist = nearest_centres(batch, centres)
    batch_counts = np.bincount(labels, minlength=k).astype(np.float64)
    batch_sums = np.stack([np.bincount(labels, weights=batch[:, d], minlength=k) for d in range(dims)], 1)
    new_seen = seen + batch_counts
    moved = batch_counts > 0
    new_centres = centres.copy()
    new_centres[moved] = (centres[moved] * seen[moved, None] + batch_sums[moved]) / new_seen[moved, None]
    return new_centres, new_seen, float(sq_dist.mean())


def far_points(data, centres, count):
    """The ``count`` points of ``data`` (WeightedPoints) farthest from their nearest centre (centred coordinates),
    as numpy: the dict of :func:`merge_far_points`."""
    chunk = functools.partial(far_points_chunk, centres=centres, count=count)
    return data.reduce(chunk, functools.partial(merge_far_points, count=count), "kmeans-far-points").result()


def _nearest_label(x, weights, centres):
    return nearest_centres(x, centres)[0]


# ---------------------------------------------------------------------------------------- the fit

class ReducedAssignment:
    """Lloyd statistics and labels of weighted points on the cluster: one tree reduction of :func:`lloyd_chunk` per
    call, with no state between calls."""

    def __init__(self, data):
        self.data = data

    def stats(self, centres, name="kmeans-stats"):
        """The merged :func:`lloyd_chunk` statistics for ``centres (k, D)`` (centred coordinates), by tasks
        named ``name``."""
        return self.data.reduce(functools.partial(lloyd_chunk, centres=centres), add_stats, name).result()

    def labels(self, centres):
        """Nearest-centre labels ``(N,)`` for ``centres (k, D)`` (centred coordinates), lazy."""
        return self.data.map_rows(functools.partial(_nearest_label, centres=centres), np.intp, "kmeans-labels")


class BoundedAssignment:
    """The same statistics and labels as :class:`ReducedAssignment`, bit for bit, for :class:`LocalPoints`: each block
    keeps its points' nearest and second nearest centres and bounds on their distances from one call to the next
    (:func:`mixlib.fit.compiled.bounded_lloyd_sums`), so that a point whose centre is still the nearest by the bounds
    is compared with that centre only. The blocks' statistics merge in the tree of :meth:`LocalPoints.reduce`."""

    def __init__(self, data):
        self.x = [contiguous(block[:, :-1]) for block in data.blocks]
        self.weights = [contiguous(block[:, -1]) for block in data.blocks]
        self.nearest = [np.zeros((len(x), 2), np.int32) for x in self.x]  # the nearest and second centres
        self.lower = [np.zeros((len(x), 2)) for x in self.x]  # bounds on the distances to the second and the rest
        self.split_every = data.split_every
        self.centres = None  # the centres the labels and bounds were last set for
        self.order = None  # each centre's others, nearest first (mixlib.fit.compiled.centre_neighbours)
        self.drift = None  # the centres' moves summed over the calls, and the sum of each call's largest move

    def stats(self, centres, name=None):
        """The merged :func:`lloyd_chunk` statistics for ``centres (k, D)`` (centred coordinates)."""
        from .loops import bounded_lloyd_sums, centre_neighbours

        centres = contiguous(centres)
        first = self.centres is None
        previous = centres if first else self.centres
        shifts = np.sqrt(((centres - previous) ** 2).sum(axis=1))
        self.centres = centres.copy()
        if first:
            self.order = np.zeros((len(centres), len(centres) - 1), np.int64)
            self.drift = np.zeros(len(centres) + 1)
        self.drift += np.append(shifts, shifts.max())
        neighbours = (*centre_neighbours(centres, self.order, first), self.order)

        def block_stats(i):
            counts, sums, inertia = bounded_lloyd_sums(self.x[i], self.weights[i], centres, neighbours, self.drift,
                                                       self.nearest[i], self.lower[i], first)
            return {"counts": counts, "sums": sums, "inertia": inertia}

        return local_tree(range(len(self.x)), block_stats, add_stats, split_every=self.split_every)

    def labels(self, centres):
        """Nearest-centre labels ``(N,)`` intp for ``centres (k, D)`` (centred coordinates), numpy."""
        self.stats(centres)
        return np.concatenate([nearest[:, 0] for nearest in self.nearest]).astype(np.intp, copy=False)


@dataclasses.dataclass(frozen=True)
class KMeansResult:
    """A fitted k-means model.

    Attributes
    ----------
    centres : ndarray (k, D) float64
    iterations : int, Lloyd iterations or mini-batch steps run
    converged : bool
    inertia : float, weighted sum of squared distances of the points to their nearest centre
    tasks_per_iteration : int, tasks of one Lloyd iteration (the same in every iteration; 0 for mini-batch)
    reseeded : int, empty clusters re-seeded during Lloyd iterations
    labels : dask.array.Array (N,) int, lazy nearest-centre label of every point
    method : 'lloyd' or 'minibatch'
    """

    centres: np.ndarray
    iterations: int
    converged: bool
    inertia: float
    tasks_per_iteration: int
    reseeded: int
    labels: object
    method: str = "lloyd"

    def describe(self):
        """One line for a log (the summary protocol that :class:`~mixlib.fit.gmm.GMMResult` shares)."""
        return (f"k-means ({self.method}): {self.iterations} iterations, converged={self.converged}, "
                f"inertia {self.inertia:.6g}")

    def summary(self, n_points):
        """What a report keeps of the fit: a dict of JSON values (``n_points``: the total weight of the data)."""
        return {"iterations": self.iterations, "converged": self.converged, "inertia": self.inertia,
                "tasks_per_iteration": self.tasks_per_iteration}


def fit_kmeans(points, weights=None, *, k, method="lloyd", init="k-means++", max_iter=300, tol=1e-4,
               seed=0, batch_size=4096, max_no_improvement=10, init_sample=1 << 18, chunk_rows=1 << 18,
               split_every=8, progress=None, in_process=False, fixed=None):
    """Fit k-means to weighted points on the current Dask client, or in this process.

    Parameters
    ----------
    points : ndarray or dask.array.Array (N, D), float (or integer) values, N >= k; or WeightedPoints
        (on the cluster, or LocalPoints) already made (then ``weights`` is None)
    weights : ndarray or dask.array.Array (N,), non-negative, or None for unit weights
    k : int, number of clusters
    method : 'lloyd' or 'minibatch'
    init : 'k-means++' or ndarray (k, D), the initial centres
    max_iter : int, Lloyd iterations or mini-batch steps at most
    tol : float, convergence when the summed squared centre shift of one iteration is at most
        ``tol`` times the mean per-feature variance of the data (scikit-learn's convention)
    seed : int, seeds k-means++ and the mini-batch draws
    batch_size : int, points per mini-batch step
    max_no_improvement : int, mini-batch: stop after this many steps without a lower smoothed inertia
    init_sample : int, k-means++ runs on every point up to this many, else on this many weighted draws
    chunk_rows : int, rows per chunk for numpy input
    split_every : int, fan-in of the reduction tree (for numpy or dask input)
    progress : callable ``(step, **values)`` or None, called after every centre of k-means++ (with ``stage`` and
        ``total``), every Lloyd iteration (with the inertia and the centre shift) and every mini-batch step (with
        the smoothed batch inertia)
    in_process : bool, numpy points fitted in this process (:class:`~mixlib.fit.points.LocalPoints`: the same
        blocks and tree, so the same result, with no cluster), e.g. inside a task
    fixed : ndarray (f, D) or None, centres that never move, f <= k: the first f of the result, exactly; the
        others are fitted around them (k-means++ draws them given these; a point nearest to one is its)

    Returns
    -------
    KMeansResult
    """
    data = points if isinstance(points, WeightedPoints) else weighted_points(
        points, weights, chunk_rows=chunk_rows, split_every=split_every, in_process=in_process)
    rng = np.random.default_rng(seed)
    fixed = np.zeros((0, len(data.mean))) if fixed is None else np.asarray(fixed, dtype=np.float64)
    if len(fixed) > k:
        raise ValueError(f"{len(fixed)} fixed centres do not fit in k={k}")
    centres = _initial_centres(data, init, k, rng, seed, init_sample, progress, fixed - data.mean)
    tol_abs = tol * float(np.mean(data.variance))
    bounded = isinstance(data, LocalPoints) and k <= BOUNDED_MAX_K
    assign = BoundedAssignment(data) if bounded else ReducedAssignment(data)  # the same bits
    if method == "lloyd":
        centres, iterations, converged, reseeded = _lloyd(data, assign, centres, max_iter, tol_abs, progress,
                                                          len(fixed))
        tasks = data.tasks_per_reduction
    elif method == "minibatch":
        centres, iterations, converged = _minibatch(data, centres, max_iter, tol_abs, seed, batch_size,
                                                    max_no_improvement, progress, len(fixed))
        tasks, reseeded = 0, 0
    else:
        raise ValueError(f"unknown k-means method {method!r}")
    final = assign.stats(centres, name="kmeans-inertia")
    centres = centres + data.mean
    centres[:len(fixed)] = fixed  # exactly as given, not moved by the rounding of the centring
    return KMeansResult(centres, iterations, converged, final["inertia"], tasks, reseeded,
                        assign.labels(centres - data.mean), method)


def _initial_centres(data, init, k, rng, seed, init_sample, progress=None, fixed=None):
    """Initial centres (k, D) in the centred coordinates of ``data``, the ``fixed`` (f, D) ones (centred) first."""
    dims = len(data.mean)
    if not isinstance(init, str):
        centres = np.asarray(init, dtype=np.float64)
        if centres.shape != (k, dims):
            raise ValueError(f"init has shape {centres.shape}; expected {(k, dims)}")
        centres = centres - data.mean
        if fixed is not None:
            centres[:len(fixed)] = fixed
        return centres
    if init != "k-means++":
        raise ValueError(f"unknown init {init!r}")
    if data.xw.shape[0] <= init_sample:
        xw = data.gather()
        return kmeans_plusplus(xw[:, :-1], xw[:, -1], k, rng, progress, fixed)
    return kmeans_plusplus(data.sample(init_sample, (seed, 0)), np.ones(init_sample), k, rng, progress, fixed)


def _lloyd(data, assign, centres, max_iter, tol_abs, progress=None, fixed=0):
    """Lloyd iterations until the summed squared centre shift is at most ``tol_abs`` (statistics from ``assign``;
    ``data`` re-seeds empty clusters; the first ``fixed`` centres never move)."""
    reseeded = 0
    for iteration in range(1, max_iter + 1):
        stats = assign.stats(centres)
        n_empty = len(empty_clusters(stats["counts"], fixed))
        far = far_points(data, centres, n_empty) if n_empty else None
        if n_empty:
            log.info("k-means iteration %d: re-seeded %d empty cluster(s)", iteration, n_empty)
            reseeded += n_empty
        new_centres = centres_from_stats(stats, far, centres, fixed)
        shift = float(((new_centres - centres) ** 2).sum())
        centres = new_centres
        log.debug("k-means iteration %d: centre shift %.3g", iteration, shift)
        if progress is not None:
            progress(iteration, inertia=stats["inertia"], shift=shift)
        if shift <= tol_abs:
            return centres, iteration, True, reseeded
    return centres, max_iter, False, reseeded


def _minibatch(data, centres, max_steps, tol_abs, seed, batch_size, max_no_improvement, progress=None, fixed=0):
    """Mini-batch k-means: draws come from the cluster in rounds, updates run on the client; the first ``fixed``
    centres never move."""
    steps_per_round = 64
    seen = np.zeros(len(centres))
    alpha = min(1.0, 2.0 * batch_size / (data.total_weight + 1))
    smoothed, best, stale = None, np.inf, 0
    step = 0
    for round_index in range(-(-max_steps // steps_per_round)):
        steps = min(steps_per_round, max_steps - step)
        draws = data.sample(steps * batch_size, (seed, 1, round_index))
        for batch in np.split(draws, steps):
            step += 1
            new_centres, seen, batch_inertia = minibatch_update(centres, seen, batch)
            new_centres[:fixed] = centres[:fixed]
            shift = float(((new_centres - centres) ** 2).sum())
            centres = new_centres
            # Smoothed batch inertia: an exponentially weighted average, as scikit-learn uses to stop.
            smoothed = batch_inertia if smoothed is None else (1 - alpha) * smoothed + alpha * batch_inertia
            best, stale = (smoothed, 0) if smoothed < best else (best, stale + 1)
            if progress is not None:
                progress(step, smoothed_batch_inertia=smoothed)
            if (tol_abs > 0 and shift <= tol_abs) or stale >= max_no_improvement:
                return centres, step, True
    return centres, step, False
