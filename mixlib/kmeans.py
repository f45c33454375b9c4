"""k-means on weighted points: k-means++ initialisation, Lloyd iterations and mini-batch k-means.

The kernels at the top are pure functions of one chunk of points (numpy, and the compiled loops of
:mod:`mixlib.compiled`), with no Dask inside. :class:`WeightedPoints` holds the data on the cluster and
runs tree reductions of kernel statistics over it. :func:`fit_kmeans` owns the iteration loops, which run
on the client and move only ``k x D`` numbers per iteration.

Every routine takes weighted points ``(x, w)``: a pixel's colour weighted by its count in the image
gives exactly the same centres as every pixel on its own.
"""

import dataclasses
import functools
import logging

import numpy as np

from .reduce import add_stats, submit_tree, tree_reduce, tree_tasks

log = logging.getLogger("mixlib")

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
    from .compiled import nearest

    labels, sq_dist = nearest(contiguous(x), contiguous(centres))
    return labels.astype(np.intp, copy=False), sq_dist


def contiguous(array):
    """``array`` as C-contiguous float64 (what the compiled loops of :mod:`mixlib.compiled` are built for)."""
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
    from .compiled import lloyd_sums

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


def moments_chunk(x, weights):
    """Total weight ``weight`` (), weighted sum ``sum`` (D,) and weighted sum of squares ``sumsq`` (D,)."""
    return {"weight": float(weights.sum()), "sum": weights @ x, "sumsq": weights @ (x * x)}


def centres_from_stats(stats, far, previous):
    """New centres from merged Lloyd statistics, re-seeding empty clusters.

    Each empty cluster takes one of the points farthest from their centre (the farthest first), which
    leaves its old cluster, as scikit-learn does. A cluster left with no weight by that keeps its
    previous centre (it is re-seeded at the next iteration).

    Parameters
    ----------
    stats : dict from :func:`lloyd_chunk` merged with :func:`mixlib.reduce.add_stats`
    far : dict from :func:`merge_far_points` with at least as many points as empty clusters, or None
        when no cluster is empty
    previous : ndarray (k, D), the centres the statistics were computed with

    Returns
    -------
    ndarray (k, D) float64
    """
    counts, sums = stats["counts"].copy(), stats["sums"].copy()
    for cluster, i in zip(np.flatnonzero(counts == 0), range(len(far["dist"]) if far else 0)):
        point, weight, old = far["points"][i], far["weights"][i], far["labels"][i]
        sums[old] -= weight * point
        counts[old] -= weight
        sums[cluster] = weight * point
        counts[cluster] = weight
    centres = previous.copy()
    filled = counts > 0
    centres[filled] = sums[filled] / counts[filled, None]
    return centres


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
    point_sq = np.einsum("nd,nd->n", x, x)
    centres = np.empty((k, x.shape[1]))
    centres[0] = x[rng.choice(len(x), p=weights / weights.sum())]
    closest = _sq_dist_to(x, point_sq, centres[:1])[:, 0]
    for c in range(1, k):
        potential = weights @ closest
        candidates = np.searchsorted(np.cumsum(weights * closest), rng.uniform(size=n_trials) * potential)
        candidates = np.minimum(candidates, len(x) - 1)
        candidate_dist = _sq_dist_to(x, point_sq, x[candidates])
        np.minimum(closest[:, None], candidate_dist, out=candidate_dist)
        best = int(np.argmin(weights @ candidate_dist))
        closest = candidate_dist[:, best]
        centres[c] = x[candidates[best]]
    return centres


def _sq_dist_to(x, point_sq, targets):
    """Squared distances ``(n, t)`` from points ``x`` (with ``point_sq = ||x||^2``) to ``targets (t, D)``."""
    dist = x @ targets.T
    dist *= -2.0
    dist += point_sq[:, None]
    dist += np.einsum("td,td->t", targets, targets)
    return np.maximum(dist, 0.0, out=dist)


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
    """Draw ``size`` rows of ``x (n, D)`` with replacement, with probability proportional to ``weights (n,)``.

    ``seed_key`` is a tuple of ints naming the stream (seed, round, chunk index), so a chunk's draws do
    not depend on where or when it runs.
    """
    rng = np.random.default_rng(np.random.SeedSequence(list(seed_key)))
    return x[rng.choice(len(x), size=size, p=weights / weights.sum())]


# ------------------------------------------------------------------------------- data on the cluster

class WeightedPoints:
    """Weighted points persisted on the cluster as one array ``xw (N, D + 1)`` in row chunks: the
    coordinates, centred on their weighted mean, and each point's weight in the last column.

    Kernels see a chunk as ``(x (n, D), w (n,))``; :meth:`reduce` splits the columns for them.

    Parameters
    ----------
    xw : dask.array.Array (N, D + 1) float64, centred and persisted
    blocks : list of distributed.Future, the blocks of ``xw`` in order
    mean : ndarray (D,), the weighted mean that was subtracted
    variance : ndarray (D,), the weighted variance of each feature
    total_weight : float, the sum of the weights (N for unit weights)
    chunk_weights : ndarray (number of chunks,), the sum of the weights in each chunk
    split_every : int, fan-in of the reduction tree
    """

    def __init__(self, xw, blocks, mean, variance, total_weight, chunk_weights, split_every):
        self.xw, self.blocks, self.mean, self.variance = xw, blocks, mean, variance
        self.total_weight, self.chunk_weights, self.split_every = total_weight, chunk_weights, split_every

    @classmethod
    def from_arrays(cls, points, weights=None, *, chunk_rows=1 << 18, split_every=8):
        """Centre and persist points ``(N, D)`` and weights ``(N,)`` (or None: unit weights) given as numpy
        or dask arrays; numpy blocks are scattered to the workers, not embedded in the graph."""
        import dask.array as da

        if isinstance(points, da.Array) or isinstance(weights, da.Array):
            return cls(*_from_dask(points, weights, split_every), split_every)
        return cls(*_from_numpy(points, weights, chunk_rows), split_every)

    def reduce(self, chunk, merge, name):
        """Submit a tree reduction of ``chunk(x, w)`` statistics over all chunks; returns the future of the
        merged dict (see :func:`mixlib.reduce.submit_tree`)."""
        from distributed import default_client

        return submit_tree(default_client(), self.blocks, functools.partial(_on_columns, chunk), merge, name=name,
                           split_every=self.split_every)

    @property
    def tasks_per_reduction(self):
        """Tasks in one :meth:`reduce`: the same at every iteration."""
        return tree_tasks(len(self.blocks), self.split_every)

    def far_points(self, centres, count):
        """The ``count`` points farthest from their nearest centre (centred coordinates), as numpy."""
        chunk = functools.partial(far_points_chunk, centres=centres, count=count)
        return self.reduce(chunk, functools.partial(merge_far_points, count=count), "kmeans-far-points").result()

    def labels(self, centres):
        """Lazy nearest-centre labels ``(N,)`` int of the points for centres in the original coordinates."""
        shifted = centres - self.mean
        return self.xw.map_blocks(lambda block: nearest_centres(block[:, :-1], shifted)[0], drop_axis=1,
                                  dtype=np.intp, token="kmeans-labels")

    def sample(self, size, seed_key):
        """Draw ``size`` centred points ``(size, D)`` with probability proportional to their weight.

        The draws are split among chunks by a multinomial on the chunks' total weights, then drawn
        inside each chunk from its own random stream keyed by ``seed_key + (chunk index,)``.
        """
        import dask

        rng = np.random.default_rng(np.random.SeedSequence(list(seed_key)))
        per_chunk = rng.multinomial(size, self.chunk_weights / self.chunk_weights.sum())
        draw = dask.delayed(_on_columns, pure=True)
        name = "kmeans-sample-" + "-".join(map(str, seed_key))
        parts = [draw(sample_chunk, block, size=int(n), seed_key=tuple(seed_key) + (i,), dask_key_name=f"{name}-{i}")
                 for i, (block, n) in enumerate(zip(self.xw.to_delayed().ravel(), per_chunk)) if n > 0]
        drawn = np.concatenate(dask.compute(*parts))
        return drawn[rng.permutation(len(drawn))]


def _from_dask(points, weights, split_every):
    """``(xw, blocks, mean, variance, total_weight, chunk_weights)`` for :class:`WeightedPoints` from dask arrays:
    one tree reduction for the moments and the chunks' weights, then the centred array persisted."""
    import dask
    import dask.array as da
    from dask.core import flatten
    from distributed import futures_of

    x = da.asarray(points).astype(np.float64)
    w = da.ones(len(x), chunks=x.chunks[0]) if weights is None else da.asarray(weights).astype(np.float64)
    xw = da.concatenate([x, w[:, None]], axis=1).rechunk({0: x.chunks[0], 1: -1})
    moments = tree_reduce(xw, functools.partial(_on_columns, moments_chunk), add_stats, name="kmeans-moments",
                          split_every=split_every)
    chunk_weights = xw[:, -1].map_blocks(lambda block: np.array([block.sum()]), chunks=(1,),
                                         token="kmeans-chunk-weights")
    moments, chunk_weights = dask.compute(moments, chunk_weights)
    mean, variance = _mean_and_variance(moments)
    centred = (xw - np.append(mean, 0.0)).persist()
    by_key = {future.key: future for future in futures_of(centred)}
    blocks = [by_key[key] for key in flatten(centred.__dask_keys__())]
    return centred, blocks, mean, variance, moments["weight"], np.asarray(chunk_weights)


def _from_numpy(points, weights, chunk_rows):
    """``(xw, blocks, mean, variance, total_weight, chunk_weights)`` for :class:`WeightedPoints` from numpy arrays: the
    points are on the client already, so their moments are computed here (no round trip) and the centred
    chunks are scattered."""
    x = np.asarray(points, dtype=np.float64)
    w = np.ones(len(x)) if weights is None else np.asarray(weights, dtype=np.float64)
    moments = moments_chunk(x, w)
    mean, variance = _mean_and_variance(moments)
    chunk_weights = np.array([w[start:start + chunk_rows].sum() for start in range(0, len(w), chunk_rows)])
    xw, blocks = _scattered(np.column_stack([x - mean, w]), chunk_rows)
    return xw, blocks, mean, variance, moments["weight"], chunk_weights


def _mean_and_variance(moments):
    """Weighted mean ``(D,)`` and variance ``(D,)`` per feature from :func:`moments_chunk` statistics."""
    mean = moments["sum"] / moments["weight"]
    return mean, moments["sumsq"] / moments["weight"] - mean ** 2


def _on_columns(kernel, block, **params):
    """Call ``kernel(x, w, **params)`` on a weighted-points block ``(n, D + 1)``."""
    return kernel(block[:, :-1], block[:, -1], **params)


def _scattered(array, chunk_rows):
    """A dask array over row blocks of ``array`` scattered to the workers of the current client, and the
    blocks' futures in order."""
    import dask.array as da
    from distributed import default_client

    blocks = [array[start:start + chunk_rows] for start in range(0, len(array), chunk_rows)]
    futures = default_client().scatter(blocks, hash=False)
    parts = [da.from_delayed(f, shape=b.shape, dtype=b.dtype) for f, b in zip(futures, blocks)]
    return da.concatenate(parts, axis=0), futures


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
    tasks_per_iteration : int, tasks of one Lloyd iteration (the same in every iteration; 0 for mini-batch)
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
               seed=0, batch_size=4096, max_no_improvement=10, init_sample=1 << 18, chunk_rows=1 << 18,
               split_every=8, progress=None):
    """Fit k-means to weighted points on the current Dask client.

    Parameters
    ----------
    points : ndarray or dask.array.Array (N, D), float (or integer) values, N >= k; or WeightedPoints
        already on the cluster (then ``weights`` is None)
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
    progress : callable ``(iteration, **values)`` or None, called after every Lloyd iteration (with the inertia
        and the centre shift) or mini-batch step (with the smoothed batch inertia)

    Returns
    -------
    KMeansResult
    """
    data = points if isinstance(points, WeightedPoints) else WeightedPoints.from_arrays(
        points, weights, chunk_rows=chunk_rows, split_every=split_every)
    rng = np.random.default_rng(seed)
    centres = _initial_centres(data, init, k, rng, seed, init_sample)
    tol_abs = tol * float(np.mean(data.variance))
    if method == "lloyd":
        centres, iterations, converged, reseeded = _lloyd(data, centres, max_iter, tol_abs, progress)
        tasks = data.tasks_per_reduction
    elif method == "minibatch":
        centres, iterations, converged = _minibatch(data, centres, max_iter, tol_abs, seed, batch_size,
                                                    max_no_improvement, progress)
        tasks, reseeded = 0, 0
    else:
        raise ValueError(f"unknown k-means method {method!r}")
    final = data.reduce(functools.partial(lloyd_chunk, centres=centres), add_stats, "kmeans-inertia").result()
    centres = centres + data.mean
    return KMeansResult(centres, iterations, converged, final["inertia"], tasks, reseeded, data.labels(centres))


def _initial_centres(data, init, k, rng, seed, init_sample):
    """Initial centres (k, D) in the centred coordinates of ``data``."""
    dims = data.xw.shape[1] - 1
    if not isinstance(init, str):
        centres = np.asarray(init, dtype=np.float64)
        if centres.shape != (k, dims):
            raise ValueError(f"init has shape {centres.shape}; expected {(k, dims)}")
        return centres - data.mean
    if init != "k-means++":
        raise ValueError(f"unknown init {init!r}")
    if data.xw.shape[0] <= init_sample:
        xw = np.asarray(data.xw.compute())
        return kmeans_plusplus(xw[:, :-1], xw[:, -1], k, rng)
    return kmeans_plusplus(data.sample(init_sample, (seed, 0)), np.ones(init_sample), k, rng)


def _lloyd(data, centres, max_iter, tol_abs, progress=None):
    """Lloyd iterations until the summed squared centre shift is at most ``tol_abs``."""
    reseeded = 0
    for iteration in range(1, max_iter + 1):
        stats = data.reduce(functools.partial(lloyd_chunk, centres=centres), add_stats, "kmeans-stats").result()
        n_empty = int((stats["counts"] == 0).sum())
        far = data.far_points(centres, n_empty) if n_empty else None
        if n_empty:
            log.info("k-means iteration %d: re-seeded %d empty cluster(s)", iteration, n_empty)
            reseeded += n_empty
        new_centres = centres_from_stats(stats, far, centres)
        shift = float(((new_centres - centres) ** 2).sum())
        centres = new_centres
        log.debug("k-means iteration %d: centre shift %.3g", iteration, shift)
        if progress is not None:
            progress(iteration, inertia=stats["inertia"], shift=shift)
        if shift <= tol_abs:
            return centres, iteration, True, reseeded
    return centres, max_iter, False, reseeded


def _minibatch(data, centres, max_steps, tol_abs, seed, batch_size, max_no_improvement, progress=None):
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
            if progress is not None:
                progress(step, smoothed_batch_inertia=smoothed)
            if (tol_abs > 0 and shift <= tol_abs) or stale >= max_no_improvement:
                return centres, step, True
    return centres, step, False
