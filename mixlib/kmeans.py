"""k-means on weighted points: k-means++ initialisation, Lloyd iterations and mini-batch k-means.

The kernels at the top are pure numpy on one chunk of points. :class:`WeightedPoints` holds the data
on the cluster and runs tree reductions of kernel statistics over it. :func:`fit_kmeans` owns the
iteration loops, which run on the client and move only ``k x D`` numbers per iteration.

Every routine takes weighted points ``(x, w)``: a pixel's colour weighted by its count in the image
gives exactly the same centres as every pixel on its own.
"""

import dataclasses
import functools
import logging

import numpy as np

from .reduce import add_stats, tree_reduce

log = logging.getLogger("mixlib")

# Rows per distance block inside a kernel: bounds the (rows, k) distance matrix to about 32 MB.
DISTANCE_BLOCK_ELEMENTS = 1 << 22


# ----------------------------------------------------------------------------------------- kernels

def nearest_centres(x, centres):
    """Index of and squared distance to the nearest centre of each point.

    Parameters
    ----------
    x : ndarray (n, D) float64
    centres : ndarray (k, D) float64

    Returns
    -------
    labels : ndarray (n,) intp
    sq_dist : ndarray (n,) float64
    """
    # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2; the argmin needs only the last two terms.
    centre_sq = np.einsum("kd,kd->k", centres, centres)
    labels = np.empty(len(x), dtype=np.intp)
    sq_dist = np.empty(len(x), dtype=np.float64)
    rows = max(1, DISTANCE_BLOCK_ELEMENTS // max(1, len(centres)))
    for start in range(0, len(x), rows):
        xb = x[start:start + rows]
        partial_dist = centre_sq - 2.0 * (xb @ centres.T)
        best = partial_dist.argmin(axis=1)
        labels[start:start + rows] = best
        point_sq = np.einsum("nd,nd->n", xb, xb)
        sq_dist[start:start + rows] = np.maximum(partial_dist[np.arange(len(xb)), best] + point_sq, 0.0)
    return labels, sq_dist


def _unit_or(weights, n):
    return np.ones(n) if weights is None else weights


def lloyd_chunk(x, weights, centres):
    """Lloyd statistics of one chunk: assign each point to its nearest centre.

    Parameters
    ----------
    x : ndarray (n, D) float64
    weights : ndarray (n,) or (n, D) broadcast view, or None for unit weights
    centres : ndarray (k, D) float64

    Returns
    -------
    dict with ``counts`` (k,) total weight per centre, ``sums`` (k, D) weighted sum of the points per
    centre, ``inertia`` () weighted sum of squared distances, and ``far_*``: the min(k, n) points
    farthest from their centre (``far_dist``, ``far_points``, ``far_weights``, ``far_labels``), from which
    empty clusters are re-seeded.
    """
    k, dims = centres.shape
    w = _unit_or(None if weights is None else np.asarray(weights).reshape(len(x), -1)[:, 0], len(x))
    labels, sq_dist = nearest_centres(x, centres)
    sums = np.empty((k, dims))
    for d in range(dims):
        sums[:, d] = np.bincount(labels, weights=w * x[:, d], minlength=k)
    n_far = min(k, len(x))
    far = np.argpartition(sq_dist, len(x) - n_far)[len(x) - n_far:] if n_far else np.zeros(0, np.intp)
    return {
        "counts": np.bincount(labels, weights=w, minlength=k).astype(np.float64),
        "sums": sums,
        "inertia": float(w @ sq_dist),
        "far_dist": sq_dist[far], "far_points": x[far], "far_weights": w[far], "far_labels": labels[far],
    }


FAR_KEYS = ("far_dist", "far_points", "far_weights", "far_labels")


def merge_lloyd(parts):
    """Merge Lloyd statistics: add counts, sums and inertia; keep the k farthest points overall."""
    total = add_stats([{key: p[key] for key in ("counts", "sums", "inertia")} for p in parts])
    far = {key: np.concatenate([p[key] for p in parts]) for key in FAR_KEYS}
    keep = np.argsort(-far["far_dist"], kind="stable")[:len(total["counts"])]
    total.update({key: value[keep] for key, value in far.items()})
    return total


def moments_chunk(x, weights):
    """Total weight ``weight`` (), weighted sum ``sum`` (D,) and weighted sum of squares ``sumsq`` (D,)."""
    w = _unit_or(None if weights is None else np.asarray(weights).reshape(len(x), -1)[:, 0], len(x))
    return {"weight": float(w.sum()), "sum": w @ x, "sumsq": w @ (x * x)}


def centres_from_stats(stats):
    """New centres from merged Lloyd statistics, re-seeding empty clusters.

    An empty cluster takes the point farthest from its centre (the farthest first), which leaves its
    old cluster, as scikit-learn does.

    Returns
    -------
    centres : ndarray (k, D) float64
    n_empty : int, how many clusters were re-seeded
    """
    counts, sums = stats["counts"].copy(), stats["sums"].copy()
    empty = np.flatnonzero(counts == 0)
    for cluster, i in zip(empty, range(len(stats["far_dist"]))):
        point, weight, old = stats["far_points"][i], stats["far_weights"][i], stats["far_labels"][i]
        sums[old] -= weight * point
        counts[old] -= weight
        sums[cluster] = weight * point
        counts[cluster] = weight
    with np.errstate(invalid="ignore", divide="ignore"):
        centres = sums / counts[:, None]
    return centres, len(empty)


def kmeans_plusplus(x, weights, k, rng):
    """Greedy k-means++ seeding on weighted points (Arthur & Vassilvitskii 2007, with local trials).

    Each new centre is the best of ``2 + log k`` candidates drawn with probability proportional to
    ``w * D(x)^2``, the one that lowers the weighted potential most, as scikit-learn does.

    Parameters
    ----------
    x : ndarray (n, D) float64, n >= k
    weights : ndarray (n,) float64, positive
    k : int
    rng : numpy.random.Generator

    Returns
    -------
    ndarray (k, D) float64
    """
    n_trials = 2 + int(np.log(k))
    centres = np.empty((k, x.shape[1]))
    centres[0] = x[rng.choice(len(x), p=weights / weights.sum())]
    closest = np.einsum("nd,nd->n", x - centres[0], x - centres[0])
    for c in range(1, k):
        potential = weights @ closest
        candidates = np.searchsorted(np.cumsum(weights * closest), rng.uniform(size=n_trials) * potential)
        candidates = np.minimum(candidates, len(x) - 1)
        candidate_dist = np.stack([np.einsum("nd,nd->n", x - x[j], x - x[j]) for j in candidates])
        np.minimum(closest, candidate_dist, out=candidate_dist)
        best = int(np.argmin(candidate_dist @ weights))
        closest = candidate_dist[best]
        centres[c] = x[candidates[best]]
    return centres


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


def sample_chunk(x, weights, size, seed_key):
    """Draw ``size`` rows of a chunk with replacement, with probability proportional to their weight.

    ``seed_key`` is a tuple of ints naming the stream (seed, round, chunk index), so a chunk's draws do
    not depend on where or when it runs.
    """
    rng = np.random.default_rng(np.random.SeedSequence(list(seed_key)))
    if weights is None:
        return x[rng.integers(0, len(x), size)]
    return x[rng.choice(len(x), size=size, p=weights / weights.sum())]


# ------------------------------------------------------------------------------- data on the cluster

class WeightedPoints:
    """Points ``(N, D)`` float64, centred on their weighted mean, with optional weights ``(N,)``,
    persisted on the cluster in row chunks.

    Parameters
    ----------
    x : dask.array.Array (N, D) float64, already centred and persisted
    weights : dask.array.Array (N,) float64 or None (unit weights)
    mean : ndarray (D,), the weighted mean that was subtracted
    variance : ndarray (D,), the weighted variance of each feature
    total_weight : float, the sum of the weights (N for unit weights)
    split_every : int, fan-in of the reduction tree
    """

    def __init__(self, x, weights, mean, variance, total_weight, split_every):
        self.x, self.weights, self.mean = x, weights, mean
        self.variance, self.total_weight, self.split_every = variance, total_weight, split_every

    @classmethod
    def from_arrays(cls, points, weights=None, *, chunk_rows=1 << 18, split_every=8):
        """Centre and persist points given as numpy or dask arrays (numpy blocks are scattered, not
        embedded in the graph)."""
        x = _as_dask(points, chunk_rows).astype(np.float64).rechunk({1: -1})
        w = None if weights is None else _as_dask(weights, x.chunks[0]).astype(np.float64).rechunk((x.chunks[0],))
        moments = tree_reduce(x, moments_chunk, add_stats, name="kmeans-moments",
                              weights=None if w is None else w[:, None], split_every=split_every).compute()
        mean = moments["sum"] / moments["weight"]
        variance = moments["sumsq"] / moments["weight"] - mean ** 2
        return cls((x - mean).persist(), None if w is None else w.persist(), mean, variance,
                   moments["weight"], split_every)

    def reduce(self, chunk, merge, name):
        """Lazy tree reduction of ``chunk(x_block, weights_block)`` statistics over all chunks."""
        weights = None if self.weights is None else self.weights[:, None]
        return tree_reduce(self.x, chunk, merge, name=name, weights=weights, split_every=self.split_every)

    def labels(self, centres):
        """Lazy nearest-centre labels ``(N,)`` int of the points for centres in the original coordinates."""
        shifted = centres - self.mean
        return self.x.map_blocks(lambda block: nearest_centres(block, shifted)[0], drop_axis=1,
                                 dtype=np.intp, token="kmeans-labels")

    def sample(self, size, seed_key):
        """Draw ``size`` centred points with probability proportional to their weight, as numpy.

        The draws are split among chunks by a multinomial on the chunks' total weights, then drawn
        inside each chunk from its own random stream keyed by ``seed_key + (chunk index,)``.
        """
        import dask

        x_blocks = self.x.to_delayed().ravel()
        if self.weights is None:
            totals = np.array(self.x.chunks[0], dtype=np.float64)
            w_blocks = [None] * len(x_blocks)
        else:
            w_blocks = self.weights.to_delayed().ravel()
            totals = np.asarray(self.weights.map_blocks(lambda b: np.array([b.sum()]), chunks=(1,),
                                                        token="kmeans-chunk-weights").compute())
        rng = np.random.default_rng(np.random.SeedSequence(list(seed_key)))
        per_chunk = rng.multinomial(size, totals / totals.sum())
        draw = dask.delayed(sample_chunk, pure=True)
        parts = [draw(xb, wb, int(n), tuple(seed_key) + (i,), dask_key_name=f"kmeans-sample-{_key(seed_key)}-{i}")
                 for i, (xb, wb, n) in enumerate(zip(x_blocks, w_blocks, per_chunk)) if n > 0]
        drawn = np.concatenate(dask.compute(*parts))
        return drawn[rng.permutation(len(drawn))]


def _key(seed_key):
    return "-".join(map(str, seed_key))


def _as_dask(array, chunks):
    import dask.array as da

    if isinstance(array, da.Array):
        return array
    array = np.asarray(array)
    rows = chunks if isinstance(chunks, tuple) else _row_chunks(len(array), chunks)
    return _scattered(array, rows)


def _row_chunks(n, chunk_rows):
    full, rest = divmod(n, chunk_rows)
    return (chunk_rows,) * full + ((rest,) if rest else ())


def _scattered(array, rows):
    """A dask array over blocks of ``array`` scattered to the workers (or kept in memory without a client)."""
    import dask.array as da
    from distributed import default_client

    bounds = np.cumsum((0,) + tuple(rows))
    blocks = [array[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    try:
        futures = default_client().scatter(blocks)
    except ValueError:
        return da.from_array(array, chunks=(tuple(rows),) + array.shape[1:])
    parts = [da.from_delayed(f, shape=b.shape, dtype=b.dtype) for f, b in zip(futures, blocks)]
    return da.concatenate(parts, axis=0)


# ---------------------------------------------------------------------------------------- the fit

@dataclasses.dataclass(frozen=True)
class KMeansResult:
    """A fitted k-means model.

    Attributes
    ----------
    centres : ndarray (k, D) float64
    iterations : int, Lloyd iterations or mini-batch steps run
    converged : bool
    inertia : float, weighted sum of squared distances of the points to their nearest centre
    tasks_per_iteration : int, size of one iteration's Dask graph (constant across iterations)
    reseeded : int, empty clusters re-seeded during Lloyd iterations
    labels : dask.array.Array (N,) int, lazy nearest-centre label of every point
    """

    centres: np.ndarray
    iterations: int
    converged: bool
    inertia: float
    tasks_per_iteration: int
    reseeded: int
    labels: object


def fit_kmeans(points, weights=None, *, k, method="lloyd", init="k-means++", max_iter=300, tol=1e-4,
               seed=0, batch_size=4096, max_no_improvement=10, init_sample=1 << 20, chunk_rows=1 << 18,
               split_every=8):
    """Fit k-means to weighted points on the current Dask client.

    Parameters
    ----------
    points : ndarray or dask.array.Array (N, D), float (or integer) values, N >= k
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
    init_sample : int, k-means++ runs on at most this many weighted draws of a larger dask input
    chunk_rows : int, rows per chunk for numpy input
    split_every : int, fan-in of the reduction tree

    Returns
    -------
    KMeansResult
    """
    data = WeightedPoints.from_arrays(points, weights, chunk_rows=chunk_rows, split_every=split_every)
    rng = np.random.default_rng(seed)
    centres = _initial_centres(data, init, k, rng, seed, init_sample, points, weights)
    tol_abs = tol * float(np.mean(data.variance))
    if method == "lloyd":
        centres, iterations, converged, tasks, reseeded = _lloyd(data, centres, max_iter, tol_abs)
    elif method == "minibatch":
        centres, iterations, converged = _minibatch(data, centres, max_iter, tol_abs, seed, batch_size,
                                                    max_no_improvement)
        tasks, reseeded = 0, 0
    else:
        raise ValueError(f"unknown k-means method {method!r}")
    final = data.reduce(functools.partial(lloyd_chunk, centres=centres), merge_lloyd, "kmeans-inertia").compute()
    centres = centres + data.mean
    return KMeansResult(centres, iterations, converged, final["inertia"], tasks, reseeded, data.labels(centres))


def _initial_centres(data, init, k, rng, seed, init_sample, points, weights):
    if not isinstance(init, str):
        centres = np.asarray(init, dtype=np.float64)
        if centres.shape != (k, data.x.shape[1]):
            raise ValueError(f"init has shape {centres.shape}; expected {(k, data.x.shape[1])}")
        return centres - data.mean
    if init != "k-means++":
        raise ValueError(f"unknown init {init!r}")
    if data.x.shape[0] <= init_sample:
        x = np.asarray(data.x.compute())
        w = np.ones(len(x)) if data.weights is None else np.asarray(data.weights.compute())
    else:
        x = data.sample(init_sample, (seed, 0))
        w = np.ones(len(x))
    return kmeans_plusplus(x, w, k, rng)


def _lloyd(data, centres, max_iter, tol_abs):
    """Lloyd iterations until the summed squared centre shift is at most ``tol_abs``."""
    reseeded = 0
    tasks = 0
    for iteration in range(1, max_iter + 1):
        stats = data.reduce(functools.partial(lloyd_chunk, centres=centres), merge_lloyd, "kmeans-stats")
        tasks = len(stats.__dask_graph__())
        new_centres, n_empty = centres_from_stats(stats.compute())
        if n_empty:
            log.info("k-means iteration %d: re-seeded %d empty cluster(s)", iteration, n_empty)
            reseeded += n_empty
        shift = float(((new_centres - centres) ** 2).sum())
        centres = new_centres
        log.debug("k-means iteration %d: centre shift %.3g", iteration, shift)
        if shift <= tol_abs:
            return centres, iteration, True, tasks, reseeded
    return centres, max_iter, False, tasks, reseeded


def _minibatch(data, centres, max_steps, tol_abs, seed, batch_size, max_no_improvement):
    """Mini-batch k-means: draws come from the cluster in rounds, updates run on the client."""
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
            shift = float(((new_centres - centres) ** 2).sum())
            centres = new_centres
            # Smoothed batch inertia: an exponentially weighted average, as scikit-learn uses to stop.
            smoothed = batch_inertia if smoothed is None else (1 - alpha) * smoothed + alpha * batch_inertia
            best, stale = (smoothed, 0) if smoothed < best else (best, stale + 1)
            if (tol_abs > 0 and shift <= tol_abs) or stale >= max_no_improvement:
                return centres, step, True
    return centres, step, False
