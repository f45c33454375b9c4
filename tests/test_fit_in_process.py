"""Fits in one process (LocalPoints, for a task that compresses one image of a batch) give the same bits as the
same fits on the cluster: the same blocks, the same tree of merges, the same random streams."""

import numpy as np
import pytest

from mixlib.core.reduce import add_stats, local_tree, submit_tree
from mixlib.fit.gmm import fit_gmm
from mixlib.fit.kmeans import fit_kmeans


def colours(seed=0, n=3000):
    """Weighted 3-D points with clusters, as a colour histogram would give, in several blocks of 700 rows."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 255, (6, 3))
    points = centres[rng.integers(0, 6, n)] + rng.normal(0, 12, (n, 3))
    return points, rng.integers(1, 50, n).astype(np.float64)


@pytest.mark.parametrize("n_blocks", [1, 7, 9, 65])
def test_local_tree_equals_submit_tree(client, n_blocks):
    blocks = [np.random.default_rng(i).random(5) for i in range(n_blocks)]

    def chunk(block):
        return {"sum": block.sum(), "first": block[:1]}

    remote = submit_tree(client, client.scatter(blocks), chunk, add_stats, name="test-tree", split_every=4).result()
    local = local_tree(blocks, chunk, add_stats, split_every=4)
    assert local["sum"] == remote["sum"] and np.array_equal(local["first"], remote["first"])


@pytest.mark.parametrize("method", ["lloyd", "minibatch"])
def test_kmeans_in_process_equals_the_cluster_bit_for_bit(client, method):
    points, weights = colours()
    kwargs = dict(k=8, method=method, seed=3, chunk_rows=700, batch_size=256, max_iter=60)
    remote = fit_kmeans(points, weights, **kwargs)
    local = fit_kmeans(points, weights, in_process=True, **kwargs)
    assert np.array_equal(local.centres, remote.centres)
    assert (local.inertia, local.iterations, local.converged) == (remote.inertia, remote.iterations, remote.converged)
    assert np.array_equal(np.asarray(local.labels), np.asarray(remote.labels))
    assert local.tasks_per_iteration == 0


def test_kmeans_in_process_above_the_bounded_k_gives_the_same_bits(monkeypatch):
    """Above BOUNDED_MAX_K (the bounds' tables grow as k^2: 64 GiB at k = 65536) a fit in this process takes the
    plain statistics, to the bounded fit's bits."""
    from mixlib.fit import kmeans

    points, weights = colours(seed=4)
    kwargs = dict(k=8, seed=5, chunk_rows=700, max_iter=60, in_process=True)
    bounded = fit_kmeans(points, weights, **kwargs)
    monkeypatch.setattr(kmeans, "BOUNDED_MAX_K", 7)
    monkeypatch.setattr(kmeans, "BoundedAssignment", None)  # not built: a call would raise
    plain = fit_kmeans(points, weights, **kwargs)
    assert np.array_equal(plain.centres, bounded.centres)
    assert (plain.inertia, plain.iterations) == (bounded.inertia, bounded.iterations)
    assert np.array_equal(np.asarray(plain.labels), np.asarray(bounded.labels))


@pytest.mark.parametrize("init", ["kmeans", "random"])
def test_gmm_in_process_equals_the_cluster_bit_for_bit(client, init):
    points, weights = colours(seed=1)
    kwargs = dict(k=4, init=init, seed=2, chunk_rows=700, max_iter=20)
    remote, local = fit_gmm(points, weights, **kwargs), fit_gmm(points, weights, in_process=True, **kwargs)
    for name in ("weights", "means", "covariances"):
        assert np.array_equal(getattr(local.mixture, name), getattr(remote.mixture, name)), name
    assert local.history == remote.history and local.mean_loglik == remote.mean_loglik


@pytest.mark.parametrize("case", ["colours", "integer grid with ties", "duplicate centres"])
def test_bounded_lloyd_sums_equal_lloyd_sums_bit_for_bit(case):
    """Hamerly's bounds skip work, never change a label: over iterations where the centres move (some by jumps, as a
    re-seeded cluster does), the statistics are the bits of the plain loop, ties included (first centre wins)."""
    from mixlib.fit.compiled import bounded_lloyd_sums, centre_neighbours, lloyd_sums, nearest

    rng = np.random.default_rng(1)
    if case == "colours":
        x, w = colours(n=4000)
        centres = x[rng.choice(len(x), 12, replace=False)]
    else:  # integer colours and centres: many points are at exactly the same distance from two centres
        x = rng.integers(0, 8, (4000, 3)).astype(np.float64)
        w = np.ones(len(x))
        centres = rng.integers(0, 8, (12, 3)).astype(np.float64)
        if case == "duplicate centres":
            centres[5] = centres[2]
    labels, lower, previous = np.zeros((len(x), 2), np.int32), np.zeros((len(x), 2)), centres.copy()
    order, drift = np.zeros((len(centres), len(centres) - 1), np.int64), np.zeros(len(centres) + 1)
    for iteration in range(25):
        shifts = np.sqrt(((centres - previous) ** 2).sum(axis=1))
        neighbours = (*centre_neighbours(centres, order, iteration == 0), order)
        drift += np.append(shifts, shifts.max())
        bounded = bounded_lloyd_sums(x, w, centres, neighbours, drift, labels, lower, iteration == 0)
        assert all(np.all(np.diff(neighbours[0][j, order[j]]) >= 0) for j in range(len(centres)))
        plain = lloyd_sums(x, w, centres)
        assert np.array_equal(bounded[0], plain[0]) and np.array_equal(bounded[1], plain[1])
        assert bounded[2] == plain[2]
        assert np.array_equal(labels[:, 0], nearest(x, centres)[0])
        previous = centres.copy()
        filled = plain[0] > 0
        centres = centres.copy()
        centres[filled] = plain[1][filled] / plain[0][filled, None]
        if case != "colours" or iteration % 7 == 3:  # jumps: integer centres (ties again), or a re-seed
            centres[iteration % 12] = x[rng.integers(len(x))]
