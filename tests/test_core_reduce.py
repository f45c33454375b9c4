"""Tree reductions (mixlib.core.reduce): sums against numpy, the tree's shape, independence from the workers, and the
futures-based tree equal to the Dask-array one."""

import functools
import math

import numpy as np
import pytest

from mixlib.core.reduce import add_stats, tree_reduce

# ------------------------------------------------------------------------------------ tree_reduce

def sum_chunk(block):
    flat = block.reshape(block.shape[0], -1)
    return {"sum": flat.sum(axis=0), "n": len(flat)}


def _merge_levels(array, name):
    """(number of merge levels, largest fan-in) of a reduction named ``name`` in ``array``'s graph."""
    graph = array.__dask_graph__()
    deps = graph.get_all_dependencies()

    def is_merge(key):
        layer = key[0] if isinstance(key, tuple) else key
        return layer.startswith(f"{name}-partial") or layer.startswith(f"{name}-aggregate")

    @functools.lru_cache(maxsize=None)
    def level(key):
        below = [level(d) for d in deps[key]]
        return (1 if is_merge(key) else 0) + max(below, default=0)

    merges = [key for key in graph if is_merge(key)]
    return max(level(key) for key in merges), max(len(deps[key]) for key in merges)


@pytest.mark.parametrize("shape", [(370,), (370, 3)], ids=["1d", "2d"])
def test_tree_reduce_sum_and_tree_shape(client, shape):
    import dask.array as da

    values = np.random.default_rng(7).normal(size=shape) * 1e3
    x = da.from_array(values, chunks=(10,) + shape[1:])
    assert x.numblocks[0] == 37

    reduced = tree_reduce(x, sum_chunk, add_stats, name="test-sum", split_every=4)
    result = reduced.compute()

    np.testing.assert_allclose(result["sum"], values.reshape(370, -1).sum(axis=0), rtol=1e-12)
    assert result["n"] == 370
    levels, fan_in = _merge_levels(reduced, "test-sum")
    assert levels > 1
    assert fan_in <= 4
    # The tree uses the fan-in it was given: 37 -> 10 -> 3 -> 1, three merge levels.
    assert (levels, fan_in) == (math.ceil(math.log(37, 4)), 4)


def test_tree_reduce_result_does_not_depend_on_workers(client, one_worker_address):
    import dask.array as da
    from distributed import Client

    # Values of very different magnitudes: any change in the order of additions changes the bits.
    rng = np.random.default_rng(9)
    values = rng.normal(size=(370, 2)) * 10.0 ** rng.integers(-8, 9, size=(370, 1))
    x = da.from_array(values, chunks=(10, 2))
    reduced = tree_reduce(x, sum_chunk, add_stats, name="test-order", split_every=4)

    on_two_workers = client.compute(reduced, sync=True)
    with Client(one_worker_address, set_as_default=False) as single:
        on_one_worker = single.compute(reduced, sync=True)
    in_one_thread = reduced.compute(scheduler="sync")

    for other in (on_one_worker, in_one_thread):
        np.testing.assert_array_equal(on_two_workers["sum"], other["sum"])
        assert on_two_workers["n"] == other["n"] == 370


@pytest.mark.parametrize("n_blocks", [1, 4, 5, 17, 64])
def test_submit_tree_merges_blocks_in_order_and_equals_tree_reduce(client, n_blocks):
    """The futures tree keeps the blocks' order (a merge that concatenates shows it), runs ``merge`` at least
    once, submits ``tree_tasks`` tasks, and adds up to the same bits as the lazy tree over the same blocks."""
    import dask.array as da

    from mixlib.core.reduce import submit_tree, tree_tasks

    rng = np.random.default_rng(n_blocks)
    values = rng.normal(size=(10 * n_blocks, 2)) * 10.0 ** rng.integers(-8, 9, size=(10 * n_blocks, 1))
    blocks = client.scatter([values[10 * i:10 * i + 10] for i in range(n_blocks)], hash=False)

    def chunk(block):
        return {**sum_chunk(block), "order": [float(block[0, 0])]}

    def merge(parts):  # add_stats for the sums (the same additions, in the same order), and a trace
        return {**add_stats([{"sum": p["sum"], "n": p["n"]} for p in parts]),
                "order": [v for p in parts for v in p["order"]], "merges": 1 + sum(p.get("merges", 0) for p in parts)}

    merged = submit_tree(client, blocks, chunk, merge, name="test-tree", split_every=4).result()
    assert merged["order"] == [float(values[10 * i, 0]) for i in range(n_blocks)]
    assert merged["n"] == 10 * n_blocks and merged["merges"] == tree_tasks(n_blocks, 4) - n_blocks >= 1
    lazy = tree_reduce(da.from_array(values, chunks=(10, 2)), sum_chunk, add_stats, name="test-lazy", split_every=4)
    np.testing.assert_array_equal(merged["sum"], client.compute(lazy, sync=True)["sum"])
