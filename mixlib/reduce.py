"""The one place that builds tree reductions of statistics.

A reduction here is three named pieces: a pure numpy ``chunk`` function that turns one block into a
small dict of statistics, a ``merge`` function that combines a list of such dicts into
one, and Dask's tree (``dask.array.reduction`` with ``concatenate=False``), which applies ``merge`` in
groups of ``split_every`` until one dict is left. The tree depends only on the number of blocks, so the
result does not depend on the number of workers or on scheduling.
"""

import functools

import numpy as np


def add_stats(parts):
    """Merge statistics that add up: every value of the dicts is summed key by key, in list order."""
    total = dict(parts[0])
    for part in parts[1:]:
        for key, value in part.items():
            total[key] = total[key] + value
    return total


def tree_reduce(x, chunk, merge, *, name, split_every=8):
    """A lazy tree reduction of every block of ``x`` to one dict of statistics.

    Parameters
    ----------
    x : dask.array.Array, any shape; every block is passed to ``chunk``
    chunk : callable ``(block) -> dict`` (pure numpy)
    merge : callable ``(list of dicts) -> dict``, associative (e.g. :func:`add_stats`)
    name : str, the layer name shown on the dashboard (``kmeans-stats``, ``colour-histogram``)
    split_every : int, the tree's fan-in

    Returns
    -------
    dask.array.Array of shape () and dtype object; ``.compute()`` gives the merged dict.
    """
    import dask.array as da

    return da.reduction(
        x, functools.partial(_chunk, chunk), functools.partial(_merge, merge, wrap=False),
        combine=functools.partial(_merge, merge, wrap=True), axis=tuple(range(x.ndim)), keepdims=False,
        dtype=object, meta=np.empty((), dtype=object), concatenate=False,
        split_every=_fan_in_per_axis(x.numblocks, split_every),
        name=name,
    )


def _fan_in_per_axis(numblocks, split_every):
    """Spread a merge's fan-in over the axes that have several blocks (Dask would spread an integer over
    every reduced axis, giving a binary tree along the one axis of row-chunked points)."""
    split = [axis for axis, n in enumerate(numblocks) if n > 1]
    per_axis = max(2, round(split_every ** (1 / max(1, len(split)))))
    return {axis: (per_axis if axis in split else 2) for axis in range(len(numblocks))}


def _wrapped(stats, ndim):
    """A dict of statistics inside an object array, so that Dask's meta inference sees an array."""
    box = np.empty((1,) * ndim, dtype=object)
    box.flat[0] = stats
    return box


def _chunk(chunk, block, axis=None, keepdims=None):
    return _wrapped(chunk(block), block.ndim)


def _merge(merge, nested, axis=None, keepdims=None, wrap=False):
    merged = merge(list(_flatten(nested)))
    return _wrapped(merged, len(axis)) if wrap else merged


def _flatten(nested):
    if isinstance(nested, dict):
        yield nested
    elif isinstance(nested, np.ndarray):
        yield from nested.flat
    else:
        for item in nested:
            yield from _flatten(item)
