"""Weighted points on the cluster: the data that k-means and Gaussian mixtures fit, and its tree reductions.

Every fit takes weighted points ``(x, w)``: a pixel's colour weighted by its count in the image gives exactly the
same centres (and the same mixture) as every pixel on its own. :class:`WeightedPoints` keeps them on the cluster,
centred on their weighted mean, and runs tree reductions of a kernel's statistics over them (a kernel is a pure
function of one chunk, ``kernel(x (n, D), w (n,), **params) -> dict``).
"""

import functools

import numpy as np

from ..core.arrays import run_starts
from ..core.reduce import add_stats, local_tree, submit_tree, tree_reduce, tree_tasks

# ----------------------------------------------------------------------------------------- kernels

def moments_chunk(x, weights):
    """Total weight ``weight`` (), weighted sum ``sum`` (D,) and weighted sum of squares ``sumsq`` (D,)."""
    return {"weight": float(weights.sum()), "sum": weights @ x, "sumsq": weights @ (x * x)}


def sample_chunk(x, weights, size, seed_key):
    """Draw ``size`` rows of ``x (n, D)`` with replacement, with probability proportional to ``weights (n,)``.

    ``seed_key`` is a tuple of ints naming the stream (seed, round, chunk index), so a chunk's draws do
    not depend on where or when it runs.
    """
    rng = np.random.default_rng(np.random.SeedSequence(list(seed_key)))
    return x[rng.choice(len(x), size=size, p=weights / weights.sum())]


def distinct_chunk(x, weights):
    """The distinct rows of a chunk, each weighted by the weights of its copies: ``{"rows": (m, D), "weights":
    (m,)}``, rows in lexicographic order (so the same whatever the chunk they came from). Fitting them gives the
    model of every row, as a colour histogram stands for an image's pixels."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    if not len(x):
        return {"rows": x, "weights": np.zeros(0)}
    weights = np.asarray(weights, dtype=np.float64)
    keys = whole_number_keys(x)
    if keys is not None and (weights == weights[0]).all():  # equal weights (unit, most often): a sort of keys
        ordered = np.sort(keys)
        starts = np.flatnonzero(run_starts(ordered))
        return {"rows": rows_of_keys(ordered[starts], x.shape[1]),
                "weights": np.diff(starts, append=len(x)) * weights[0]}
    if keys is not None:  # a sort of integers, in the same order as the rows' lexicographic one
        order = np.argsort(keys, kind="stable")
        first = run_starts(keys[order])
    else:
        order = np.lexsort(x.T[::-1])
        ordered = x[order]
        first = np.empty(len(x), dtype=bool)
        first[0] = True
        np.any(ordered[1:] != ordered[:-1], axis=1, out=first[1:])
    starts = np.flatnonzero(first)
    summed = np.add.reduceat(weights[order], starts)
    return {"rows": x[order[starts]], "weights": summed}


def rows_of_keys(keys, dims):
    """The rows ``(m, dims)`` float64 of :func:`whole_number_keys` ``(m,)``."""
    bits = np.uint64(64 // dims)
    mask = (np.uint64(1) << bits) - np.uint64(1)
    return np.column_stack([(keys >> (bits * np.uint64(dims - 1 - column))) & mask
                            for column in range(dims)]).astype(np.float64)


def whole_number_keys(x):
    """One uint64 per row of ``x (n, D)`` float64 whose values are all whole numbers from 0 to ``2^(64 // D) - 1``
    (colours): the values side by side, the first column highest, so that the keys sort as the rows do
    lexicographically; None for other values."""
    bits = 64 // x.shape[1]
    if x.shape[1] > 8 or x.min() < 0 or x.max() >= 2.0 ** bits or not (x == np.floor(x)).all():
        return None
    whole = x.astype(np.uint64)
    keys = np.zeros(len(x), dtype=np.uint64)
    for column in range(x.shape[1]):
        keys = (keys << np.uint64(bits)) | whole[:, column]
    return keys


def merge_distinct(parts):
    """:func:`distinct_chunk` of several chunks' results together."""
    rows = np.concatenate([part["rows"] for part in parts])
    return distinct_chunk(rows, np.concatenate([part["weights"] for part in parts]))


def distinct_share(x):
    """Distinct rows over rows of a numpy block ``(n, D)``."""
    return len(distinct_chunk(x, np.ones(len(x)))["rows"]) / max(len(x), 1)


def distinct_points(points, weights=None, *, split_every=8):
    """The distinct rows of points ``(N, D)`` and their summed weights, numpy ``((m, D), (m,))``: a tree reduction
    of :func:`distinct_chunk` over a Dask array's chunks (on the current client), or one in this process."""
    if not hasattr(points, "dask"):
        x = np.asarray(points, dtype=np.float64)
        found = distinct_chunk(x, np.ones(len(x)) if weights is None else np.asarray(weights, dtype=np.float64))
        return found["rows"], found["weights"]
    import dask.array as da

    w = da.ones(len(points), chunks=points.chunks[0]) if weights is None else weights
    xw = da.concatenate([points, w[:, None]], axis=1).rechunk({1: -1})
    merged = tree_reduce(xw, functools.partial(_on_columns, distinct_chunk), merge_distinct, name="distinct-rows",
                         split_every=split_every).compute()
    return merged["rows"], merged["weights"]


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
        merged dict (see :func:`mixlib.core.reduce.submit_tree`)."""
        from distributed import default_client

        return submit_tree(default_client(), self.blocks, functools.partial(_on_columns, chunk), merge, name=name,
                           split_every=self.split_every)

    @property
    def tasks_per_reduction(self):
        """Tasks in one :meth:`reduce`: the same at every iteration."""
        return tree_tasks(len(self.blocks), self.split_every)

    def sample(self, size, seed_key):
        """Draw ``size`` centred points ``(size, D)`` with probability proportional to their weight.

        The draws are split among chunks by a multinomial on the chunks' total weights, then drawn
        inside each chunk from its own random stream keyed by ``seed_key + (chunk index,)``.
        """
        rng = np.random.default_rng(np.random.SeedSequence(list(seed_key)))
        per_chunk = rng.multinomial(size, self.chunk_weights / self.chunk_weights.sum())
        draws = functools.partial(_sample_block, sizes=tuple(int(n) for n in per_chunk), seed_key=tuple(seed_key))
        drawn = np.concatenate(self.each_block(draws, "kmeans-sample-" + "-".join(map(str, seed_key))))
        return drawn[rng.permutation(len(drawn))]

    def each_block(self, kernel, name):
        """``[kernel(x, w, index) for every block]`` computed on the cluster (tasks ``{name}-{index}``), in order."""
        import dask

        run = dask.delayed(_on_indexed_block, pure=True)
        return list(dask.compute(*[run(kernel, block, i, dask_key_name=f"{name}-{i}")
                                   for i, block in enumerate(self.xw.to_delayed().ravel())]))

    def gather(self):
        """Every centred point and its weight, ``(N, D + 1)`` numpy, in this process."""
        return np.asarray(self.xw.compute())

    def map_rows(self, kernel, dtype, token):
        """Lazy ``(N,)`` array of ``kernel(x, w) -> (n,)`` over the blocks (a dask array of ``token`` tasks)."""
        return self.xw.map_blocks(functools.partial(_on_columns, kernel), drop_axis=1, dtype=dtype, token=token)


class LocalPoints(WeightedPoints):
    """The same weighted points as :class:`WeightedPoints` in this process, for a fit inside one task (an image of a
    batch): the same blocks, the same reduction tree (:func:`mixlib.core.reduce.local_tree`) and the same random
    streams, so a fit gives the same bits as on the cluster, with no round trip through a client.

    ``xw`` is the centred numpy array ``(N, D + 1)`` and ``blocks`` its row blocks (views).
    """

    @classmethod
    def from_arrays(cls, points, weights=None, *, chunk_rows=1 << 18, split_every=8):
        """Centre points ``(N, D)`` and weights ``(N,)`` (or None: unit weights), numpy arrays."""
        x, w, mean, variance, total_weight, chunk_weights = _numpy_summary(points, weights, chunk_rows)
        xw = np.column_stack([x - mean, w])
        blocks = [xw[start:start + chunk_rows] for start in range(0, len(xw), chunk_rows)]
        return cls(xw, blocks, mean, variance, total_weight, chunk_weights, split_every)

    def reduce(self, chunk, merge, name):
        """The merged statistics of ``chunk(x, w)`` over all blocks, as a finished future (``.result()``)."""
        return _Done(local_tree(self.blocks, functools.partial(_on_columns, chunk), merge,
                                split_every=self.split_every))

    @property
    def tasks_per_reduction(self):
        """No tasks: the reduction runs in this process."""
        return 0

    def each_block(self, kernel, name):
        return [_on_indexed_block(kernel, block, i) for i, block in enumerate(self.blocks)]

    def gather(self):
        return self.xw

    def map_rows(self, kernel, dtype, token):
        return np.concatenate([_on_columns(kernel, block) for block in self.blocks]).astype(dtype, copy=False)


def weighted_points(points, weights=None, *, chunk_rows=1 << 18, split_every=8, in_process=False):
    """:class:`LocalPoints` (``in_process``) or :class:`WeightedPoints` on the cluster, from arrays."""
    kind = LocalPoints if in_process else WeightedPoints
    return kind.from_arrays(points, weights, chunk_rows=chunk_rows, split_every=split_every)


class _Done:
    """A finished result with the ``result()`` of a future."""

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


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
    x, w, mean, variance, total_weight, chunk_weights = _numpy_summary(points, weights, chunk_rows)
    xw, blocks = _scattered(np.column_stack([x - mean, w]), chunk_rows)
    return xw, blocks, mean, variance, total_weight, chunk_weights


def _numpy_summary(points, weights, chunk_rows):
    """``(x (N, D), w (N,), mean (D,), variance (D,), total weight, chunk weights)`` of numpy points."""
    x = np.asarray(points, dtype=np.float64)
    w = np.ones(len(x)) if weights is None else np.asarray(weights, dtype=np.float64)
    moments = moments_chunk(x, w)
    mean, variance = _mean_and_variance(moments)
    chunk_weights = np.array([w[start:start + chunk_rows].sum() for start in range(0, len(w), chunk_rows)])
    return x, w, mean, variance, moments["weight"], chunk_weights


def _mean_and_variance(moments):
    """Weighted mean ``(D,)`` and variance ``(D,)`` per feature from :func:`moments_chunk` statistics."""
    mean = moments["sum"] / moments["weight"]
    return mean, moments["sumsq"] / moments["weight"] - mean ** 2


def _on_columns(kernel, block, **params):
    """Call ``kernel(x, w, **params)`` on a weighted-points block ``(n, D + 1)``."""
    return kernel(block[:, :-1], block[:, -1], **params)


def _on_indexed_block(kernel, block, index):
    """Call ``kernel(x, w, index)`` on the weighted-points block number ``index``."""
    return kernel(block[:, :-1], block[:, -1], index)


def _sample_block(x, weights, index, sizes, seed_key):
    """The draws of block ``index``: ``sizes[index]`` rows from its own stream ``seed_key + (index,)``."""
    if sizes[index] == 0:  # a block may hold no weight at all
        return x[:0]
    return sample_chunk(x, weights, sizes[index], tuple(seed_key) + (index,))


def _scattered(array, chunk_rows):
    """A dask array over row blocks of ``array`` scattered to the workers of the current client, and the
    blocks' futures in order."""
    import dask.array as da
    from distributed import default_client

    blocks = [array[start:start + chunk_rows] for start in range(0, len(array), chunk_rows)]
    futures = default_client().scatter(blocks, hash=False)
    parts = [da.from_delayed(f, shape=b.shape, dtype=b.dtype) for f, b in zip(futures, blocks)]
    return da.concatenate(parts, axis=0), futures
