"""Library-level tests of mixlib.fit.kmeans (and the weighted points of mixlib.fit.points).

Every check compares against an independent reference: scikit-learn's KMeans, brute-force numpy with
explicit loops, or a closed form. Tests that touch Dask run on the session cluster (``client`` fixture).
"""

import numpy as np
import pytest

from mixlib.core.reduce import add_stats
from mixlib.fit import kmeans
from mixlib.fit.kmeans import fit_kmeans
from mixlib.image.colors import decode_colours, histogram_chunk

# ------------------------------------------------------------------------------------ references


def brute_sq_dist(x, centres):
    """Squared distance of every point to every centre, one centre at a time: (n, k)."""
    out = np.empty((len(x), len(centres)))
    for j, c in enumerate(centres):
        diff = x - c
        out[:, j] = (diff * diff).sum(axis=1)
    return out


def brute_inertia(x, centres, weights=None):
    """Weighted sum of squared distances to the nearest centre, by brute force."""
    best = np.full(len(x), np.inf)
    for c in centres:
        diff = x - c
        np.minimum(best, (diff * diff).sum(axis=1), out=best)
    return float(best.sum() if weights is None else weights @ best)


def photo_data(image):
    """(distinct colours (M, 3) float64, their counts (M,) float64, every pixel (N, 3) float64)."""
    hist = histogram_chunk(np.asarray(image))
    colours = decode_colours(hist["codes"], 3).astype(np.float64)
    return colours, hist["counts"].astype(np.float64), np.asarray(image).reshape(-1, 3).astype(np.float64)


@pytest.fixture(scope="module")
def photos(china, flower):
    return {"china": photo_data(china), "flower": photo_data(flower)}


# --------------------------------------------------------------------- fit_kmeans against sklearn

def exact_ties(x, centres):
    """Whether some point is exactly equidistant from its two nearest centres (integer data: exact)."""
    dist = np.sort(brute_sq_dist(x, centres), axis=1)
    return bool((dist[:, 0] == dist[:, 1]).any())


@pytest.mark.parametrize("k", [8, 16])
@pytest.mark.parametrize("photo", ["china", "flower"])
def test_lloyd_on_histogram_equals_sklearn_on_every_pixel(client, photos, photo, k):
    from sklearn.cluster import KMeans, kmeans_plusplus

    colours, counts, pixels = photos[photo]
    init, _ = kmeans_plusplus(pixels, k, random_state=0)
    reference = KMeans(n_clusters=k, init=init, n_init=1, tol=0, max_iter=1000, algorithm="lloyd").fit(pixels)

    result = fit_kmeans(colours, counts, k=k, init=init, tol=0, max_iter=1000)

    assert result.converged
    np.testing.assert_allclose(result.centres, reference.cluster_centers_, rtol=0, atol=1e-6)
    assert result.inertia == pytest.approx(reference.inertia_, rel=1e-9)
    if not exact_ties(colours, init):
        assert result.iterations == reference.n_iter_
    else:
        # The initial centres are pixels, so an integer colour can be exactly equidistant from two of them in
        # the first iteration; scikit-learn breaks such ties by the rounding of its ||x||^2 - 2 x.c + ||c||^2
        # arithmetic, mixlib by taking the first centre. Both paths reach the same centres (checked above),
        # but the last tiny moves can take a few iterations more or less.
        assert abs(result.iterations - reference.n_iter_) <= 5


def test_weighted_lloyd_equals_sklearn_with_sample_weight(client):
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(20)
    blobs = rng.normal(size=(6, 3)) * 4
    points = np.vstack([b + rng.normal(size=(800, 3)) for b in blobs])
    weights = rng.uniform(0.2, 5.0, size=len(points))
    init = points[rng.choice(len(points), 10, replace=False)] + 0.01  # no exact ties: continuous data
    reference = KMeans(n_clusters=10, init=init, n_init=1, tol=0, max_iter=1000,
                       algorithm="lloyd").fit(points, sample_weight=weights)

    result = fit_kmeans(points, weights, k=10, init=init, tol=0, max_iter=1000, chunk_rows=700)

    assert reference.n_iter_ > 3
    assert result.converged
    assert result.iterations == reference.n_iter_
    np.testing.assert_allclose(result.centres, reference.cluster_centers_, rtol=0, atol=1e-9)
    assert result.inertia == pytest.approx(reference.inertia_, rel=1e-9)
    labels = np.asarray(result.labels.compute())
    np.testing.assert_array_equal(labels, reference.labels_)


@pytest.mark.parametrize("photo", ["china", "flower"])
def test_own_kmeans_plusplus_is_as_good_as_sklearn(client, photos, photo):
    from sklearn.cluster import KMeans

    colours, counts, pixels = photos[photo]
    ours, theirs = [], []
    for seed in (0, 1, 2):
        result = fit_kmeans(colours, counts, k=16, init="k-means++", seed=seed)
        reference = KMeans(n_clusters=16, n_init=1, random_state=seed).fit(pixels)
        assert result.centres.shape == (16, 3)
        assert np.isfinite(result.centres).all()
        # The reported inertia is the inertia of the returned centres on every pixel.
        assert result.inertia == pytest.approx(brute_inertia(pixels, result.centres), rel=1e-9)
        # One seed against one seed: local optima differ by a few percent either way (measured over ten
        # seeds: mean ratio 1.002, spread +-3%), so the tight bound applies to the mean over seeds below.
        assert result.inertia <= 1.05 * reference.inertia_
        ours.append(result.inertia)
        theirs.append(reference.inertia_)
    assert np.mean(ours) <= 1.005 * np.mean(theirs)


def test_histogram_path_equals_every_pixel_path(client, photos):
    import dask.array as da
    from sklearn.cluster import kmeans_plusplus

    colours, counts, pixels = photos["flower"]
    init, _ = kmeans_plusplus(pixels, 8, random_state=0)
    rows = -(-len(pixels) // 7)
    every_pixel = da.from_array(pixels, chunks=(rows, 3))
    assert every_pixel.numblocks[0] >= 5

    by_histogram = fit_kmeans(colours, counts, k=8, init=init, tol=0)
    by_pixel = fit_kmeans(every_pixel, None, k=8, init=init, tol=0)

    assert by_histogram.converged and by_pixel.converged
    assert by_histogram.iterations == by_pixel.iterations
    np.testing.assert_allclose(by_histogram.centres, by_pixel.centres, rtol=0, atol=1e-9)
    assert by_histogram.inertia == pytest.approx(by_pixel.inertia, rel=1e-9)
    # The lazy labels of the pixel path are the nearest centres of every pixel.
    labels = np.asarray(by_pixel.labels.compute())
    np.testing.assert_array_equal(labels, brute_sq_dist(pixels, by_pixel.centres).argmin(axis=1))


def test_graph_size_is_the_same_in_every_iteration(client):
    """Counted by the scheduler: every Lloyd iteration runs the same tasks (its chunks and the reduction tree)."""
    import collections

    from distributed import get_task_stream

    # Uniform points with many clusters: Lloyd needs about 200 iterations here (tol=0).
    points = np.random.default_rng(0).uniform(0, 1, size=(40_000, 3))
    with get_task_stream(client) as stream:
        result = fit_kmeans(points, None, k=100, tol=0, max_iter=100, chunk_rows=5_000, split_every=4)
    per_iteration = collections.Counter(task["key"][0] for task in stream.data
                                        if isinstance(task["key"], tuple) and task["key"][0].startswith("kmeans-stats"))

    assert result.iterations == 100 and not result.converged
    assert len(per_iteration) == 100
    # Eight chunks, two merges of four, then one: a real tree, not a single task.
    assert set(per_iteration.values()) == {8 + 2 + 1} == {result.tasks_per_iteration}


def test_minibatch_is_close_to_lloyd_and_deterministic(client, photos):
    from sklearn.cluster import KMeans

    colours, counts, pixels = photos["china"]
    reference = KMeans(n_clusters=8, n_init=1, random_state=0).fit(pixels).inertia_

    first = fit_kmeans(colours, counts, k=8, method="minibatch", seed=0)
    again = fit_kmeans(colours, counts, k=8, method="minibatch", seed=0)
    other = fit_kmeans(colours, counts, k=8, method="minibatch", seed=1)

    assert abs(first.inertia / reference - 1) <= 0.05
    assert first.inertia == pytest.approx(brute_inertia(pixels, first.centres), rel=1e-9)
    np.testing.assert_array_equal(first.centres, again.centres)
    assert first.iterations == again.iterations
    assert not np.allclose(first.centres, other.centres)


# ------------------------------------------------------------------------------ kernels, no Dask

@pytest.mark.parametrize("unit_weights", [False, True], ids=["weighted", "unit"])
def test_lloyd_chunk_matches_brute_force(unit_weights):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 3)) * [1.0, 3.0, 0.5]
    centres = rng.normal(size=(7, 3))
    w_ref = np.ones(500) if unit_weights else rng.uniform(0.1, 4.0, size=500)

    stats = kmeans.lloyd_chunk(x, w_ref.copy(), centres)

    dist = brute_sq_dist(x, centres)
    labels = dist.argmin(axis=1)
    counts = np.zeros(7)
    sums = np.zeros((7, 3))
    for i in range(len(x)):
        counts[labels[i]] += w_ref[i]
        sums[labels[i]] += w_ref[i] * x[i]
    inertia = sum(w_ref[i] * dist[i, labels[i]] for i in range(len(x)))

    np.testing.assert_allclose(stats["counts"], counts, rtol=1e-12)
    np.testing.assert_allclose(stats["sums"], sums, rtol=1e-12, atol=1e-12)
    assert stats["inertia"] == pytest.approx(inertia, rel=1e-12)


def test_lloyd_chunks_add_up_to_the_whole():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 2))
    w = rng.uniform(0.5, 2.0, size=300)
    centres = rng.normal(size=(5, 2))
    whole = kmeans.lloyd_chunk(x, w, centres)
    parts = [kmeans.lloyd_chunk(x[a:b], w[a:b], centres) for a, b in [(0, 1), (1, 120), (120, 300)]]
    merged = add_stats(parts)
    np.testing.assert_allclose(merged["counts"], whole["counts"], rtol=1e-12)
    np.testing.assert_allclose(merged["sums"], whole["sums"], rtol=1e-12, atol=1e-12)
    assert merged["inertia"] == pytest.approx(whole["inertia"], rel=1e-12)


def _reseed(x, w, centres, chunks=((0, None),)):
    """Lloyd statistics and the far points of ``x`` split into ``chunks``, merged as the fit merges them."""
    parts = [(x[a:b], w[a:b]) for a, b in chunks]
    stats = add_stats([kmeans.lloyd_chunk(xp, wp, centres) for xp, wp in parts])
    n_empty = int((stats["counts"] == 0).sum())
    far = None
    if n_empty:
        far = kmeans.merge_far_points([kmeans.far_points_chunk(xp, wp, centres, n_empty) for xp, wp in parts],
                                      n_empty)
    return stats, far, n_empty


@pytest.mark.parametrize("far_centres", [1, 2])
def test_centres_from_stats_reseeds_empty_clusters_with_farthest_points(far_centres):
    rng = np.random.default_rng(3)
    blob_a = rng.normal(0.0, 1.0, size=(60, 3))
    blob_b = rng.normal(10.0, 1.0, size=(40, 3))
    x = np.vstack([blob_a, blob_b])
    w = rng.uniform(0.5, 2.0, size=len(x))
    far_away = [[1000.0, 1000.0, 1000.0], [-900.0, 50.0, 2000.0]][:far_centres]
    centres = np.vstack([blob_a[0], blob_b[0], far_away])

    stats, far, n_empty = _reseed(x, w, centres, chunks=((0, 30), (30, 75), (75, None)))
    assert n_empty == far_centres
    new = kmeans.centres_from_stats(stats, far, centres)

    assert np.isfinite(new).all()
    # Brute force: the empty clusters take the farthest points, the farthest first, which leave their clusters.
    dist = brute_sq_dist(x, centres)
    labels, nearest = dist.argmin(axis=1), dist.min(axis=1)
    farthest = np.argsort(-nearest, kind="stable")[:far_centres]
    for j, i in enumerate(farthest):
        np.testing.assert_allclose(new[2 + j], x[i], rtol=1e-12)  # (w x) / w
    moved = np.zeros(len(x), bool)
    moved[farthest] = True
    for c in (0, 1):
        members = (labels == c) & ~moved
        expected = (w[members, None] * x[members]).sum(0) / w[members].sum()
        np.testing.assert_allclose(new[c], expected, rtol=1e-12)
    # With the new centres no cluster is empty.
    assert (kmeans.lloyd_chunk(x, w, new)["counts"] > 0).all()


def test_centres_from_stats_never_returns_nan_when_the_donor_cluster_has_one_point():
    # Cluster 1 holds one point (60), which is also the point farthest from its centre (100); cluster 2 (1000)
    # is empty. Moving the point leaves cluster 1 empty: its centre must not become 0/0.
    x = np.array([[0.0], [1.0], [60.0]])
    centres = np.array([[0.0], [100.0], [1000.0]])
    stats, far, n_empty = _reseed(x, np.ones(3), centres)
    assert n_empty == 1
    with np.errstate(invalid="ignore", divide="ignore"):
        new = kmeans.centres_from_stats(stats, far, centres)
    assert np.isfinite(new).all(), new
    # The emptied cluster keeps its previous centre; the re-seeded one takes the moved point.
    np.testing.assert_array_equal(new.ravel(), [0.5, 100.0, 60.0])


def test_kmeans_plusplus_returns_distinct_input_points():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(400, 3))
    w = rng.uniform(0.1, 3.0, size=400)
    centres = kmeans.kmeans_plusplus(x, w, 20, np.random.default_rng(0))
    assert centres.shape == (20, 3)
    for c in centres:
        assert (x == c).all(axis=1).any()
    assert len(np.unique(centres, axis=0)) == 20
    # Same generator state, same centres.
    np.testing.assert_array_equal(centres, kmeans.kmeans_plusplus(x, w, 20, np.random.default_rng(0)))


def test_kmeans_plusplus_on_duplicated_points_picks_every_distinct_point():
    rng = np.random.default_rng(5)
    distinct = rng.normal(size=(12, 2)) * 10
    x = np.repeat(distinct, 50, axis=0)
    w = rng.uniform(0.5, 2.0, size=len(x))
    centres = kmeans.kmeans_plusplus(x, w, 12, np.random.default_rng(1))
    assert len(np.unique(centres, axis=0)) == 12
    np.testing.assert_array_equal(np.unique(centres, axis=0), np.unique(distinct, axis=0))


def sculley_reference(centres, seen, batch):
    """Sculley (2010), one point at a time: eta = 1 / v_c, assignments cached from the centres before the batch."""
    centres, seen = centres.copy(), seen.copy()
    labels = brute_sq_dist(batch, centres).argmin(axis=1)
    for point, c in zip(batch, labels):
        seen[c] += 1
        eta = 1.0 / seen[c]
        centres[c] = (1.0 - eta) * centres[c] + eta * point
    return centres, seen


def test_minibatch_update_matches_sequential_sculley():
    rng = np.random.default_rng(6)
    centres = rng.normal(size=(6, 3)) * 3
    seen = np.array([0.0, 5.0, 0.0, 17.0, 2.0, 100.0])
    batch = rng.normal(size=(250, 3)) * 3
    old = centres.copy()

    new_centres, new_seen, batch_inertia = kmeans.minibatch_update(centres, seen, batch)
    ref_centres, ref_seen = sculley_reference(old, seen, batch)

    np.testing.assert_array_equal(centres, old)  # the input is not modified
    np.testing.assert_allclose(new_centres, ref_centres, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(new_seen, ref_seen)
    assert batch_inertia == pytest.approx(brute_sq_dist(batch, old).min(axis=1).mean(), rel=1e-12)
