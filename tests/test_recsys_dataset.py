"""Ratings datasets read and prepared by the workers (mixlib.recsys.dataset, mixlib.recsys.shards) against the
in-memory reference: one file read whole, the brute-force cold-start filter, the split by time, and a split whose
validation and test ratings are the pairs of lowest seeded key, found by sorting every key."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mixlib.core.errors import InputError
from mixlib.recsys.dataset import Tasks, dataset_files, prepare_dataset
from mixlib.recsys.ratings import cold_start_filter, read_ratings, split_by_time
from mixlib.recsys.shards import split_keys


def random_rows(n, seed=0, n_users=300, n_items=120, repeats=0.05):
    """(user id, item id, rating, time) rows with power-law activity and some repeated pairs."""
    rng = np.random.default_rng(seed)
    users = (rng.pareto(1.2, n) * 20).astype(int) % n_users
    items = (rng.pareto(1.0, n) * 10).astype(int) % n_items
    repeated = rng.random(n) < repeats
    users[repeated], items[repeated] = users[np.flatnonzero(repeated) // 2], items[np.flatnonzero(repeated) // 2]
    ratings = rng.integers(1, 6, n).astype(float)
    times = 1_600_000_000 + rng.integers(0, 10_000, n)  # ties in time on purpose
    return [(f"u{u}", 1000 + i, r, t) for u, i, r, t in zip(users, items, ratings, times)]


def write_parts(folder, rows, n_parts, kind="parquet"):
    """``rows`` cut into ``n_parts`` files in order (names sort as the rows go)."""
    folder.mkdir(parents=True, exist_ok=True)
    for number, chunk in enumerate(np.array_split(np.arange(len(rows)), n_parts)):
        part = [rows[r] for r in chunk]
        if kind == "parquet":
            table = pa.table({"user": [r[0] for r in part], "item": [r[1] for r in part],
                              "rating": [r[2] for r in part], "timestamp": [r[3] for r in part]})
            pq.write_table(table, folder / f"part-{number:03d}.parquet")
        else:
            text = "user,item,rating,timestamp\n" + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in part)
            (folder / f"part-{number:03d}.csv").write_text(text)
    return folder


def write_one(path, rows):
    path.write_text("user,item,rating,timestamp\n" + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in rows))
    return path


def prepared(tasks, files, **options):
    options = {"min_entries": 0, "validation": 0.1, "test": 0.1, "seed": 3, **options}
    return prepare_dataset(tasks, files, **options).gathered()


def as_set(ratings, rows):
    """{(user id, item id): (rating, time)} of some rows of a Ratings."""
    return {(ratings.user_ids[ratings.users[r]], ratings.item_ids[ratings.items[r]]):
            (ratings.values[r], ratings.times[r]) for r in rows}


@pytest.mark.parametrize("shard_ratings", [50, 1 << 20])
def test_random_split_holds_out_the_pairs_of_lowest_key(tmp_path, shard_ratings):
    rows = random_rows(3000)
    ratings, parts = prepared(Tasks(None), [write_one(tmp_path / "r.csv", rows)], shard_ratings=shard_ratings,
                              validation=0.1, test=250)
    keys = split_keys(ratings.users, ratings.items, len(ratings.item_ids), 3)
    by_key = np.argsort(keys)
    n = len(keys)
    assert len(parts["validation"]) == round(0.1 * n) and len(parts["test"]) == 250
    np.testing.assert_array_equal(parts["validation"], np.sort(by_key[:round(0.1 * n)]))
    np.testing.assert_array_equal(parts["test"], np.sort(by_key[round(0.1 * n):round(0.1 * n) + 250]))
    assert len(parts["train"]) == n - round(0.1 * n) - 250


def test_parts_equal_one_file_with_repeats_across_files(tmp_path):
    """Several files (CSV and Parquet) read part by part give the ratings of the one file of their rows: ids,
    the last of each repeated pair in file order, the same split."""
    rows = random_rows(4000, seed=1)
    one = prepared(Tasks(None), [write_one(tmp_path / "all.csv", rows)])
    whole = read_ratings(tmp_path / "all.csv")
    for kind, n_parts in (("parquet", 7), ("csv", 3)):
        files = dataset_files(write_parts(tmp_path / kind, rows, n_parts, kind))
        assert len(files) == n_parts
        many = prepared(Tasks(None), files, shard_ratings=300)
        for a, b in zip(one[0].user_ids, many[0].user_ids):
            assert a == b
        np.testing.assert_array_equal(one[0].item_ids, many[0].item_ids)
        for name in ("users", "items", "values", "times"):
            np.testing.assert_array_equal(getattr(one[0], name), getattr(many[0], name))
        for name in ("train", "validation", "test"):
            np.testing.assert_array_equal(one[1][name], many[1][name])
    # the reference reader (last of each repeated pair wins) holds the same ratings
    assert as_set(one[0], range(one[0].shape[2])) == as_set(whole, range(whole.shape[2]))


def test_cold_start_filter_and_time_split_equal_the_references(tmp_path):
    rows = random_rows(5000, seed=2)
    files = dataset_files(write_parts(tmp_path / "d", rows, 5))
    ratings, parts = prepared(Tasks(None), files, min_entries=4, split_by="time", validation=1, test=0.2,
                              shard_ratings=400)
    whole = read_ratings(write_one(tmp_path / "all.csv", rows))
    keep, rounds = cold_start_filter(whole.users, whole.items, 4)
    assert rounds >= 2  # the filter needed more than one round
    reference = whole.subset(keep).reindexed()
    assert as_set(ratings, range(ratings.shape[2])) == as_set(reference, range(reference.shape[2]))
    train, validation, test = split_by_time(reference.users, reference.times, 1, 0.2)
    for name, rows_ in (("train", train), ("validation", validation), ("test", test)):
        assert as_set(ratings, parts[name]) == as_set(reference, rows_), name


def test_a_cluster_prepares_the_same_ratings_as_this_process(tmp_path, client):
    rows = random_rows(6000, seed=4)
    files = dataset_files(write_parts(tmp_path / "d", rows, 6))
    here = prepared(Tasks(None), files, min_entries=2, shard_ratings=700)
    there = prepared(Tasks(client), files, min_entries=2, shard_ratings=700)
    for name in ("users", "items", "values", "times"):
        np.testing.assert_array_equal(getattr(here[0], name), getattr(there[0], name))
    for name in ("train", "validation", "test"):
        np.testing.assert_array_equal(here[1][name], there[1][name])


def test_dataset_messages(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no ratings file"):
        dataset_files(tmp_path / "empty")
    with pytest.raises(InputError, match="holds no ratings file"):
        dataset_files(tmp_path / "nothing-*.parquet")
    folder = write_parts(tmp_path / "d", random_rows(100), 2)
    (folder / "_SUCCESS").write_text("")
    (folder / "notes.md").write_text("not ratings")
    assert [p.name for p in dataset_files(folder)] == ["part-000.parquet", "part-001.parquet"]
    assert [p.name for p in dataset_files(str(folder / "*-001.parquet"))] == ["part-001.parquet"]
    (folder / "part-002.csv").write_text("user,item\n1,2\n")  # no rating column, no time
    with pytest.raises(InputError, match="part-002.csv, line 2: fewer than 3 columns"):
        prepared(Tasks(None), dataset_files(folder))
    (folder / "part-002.csv").write_text("user,item,rating\n1,2,3\n")
    with pytest.raises(InputError, match="some files have a time column and others do not"):
        prepared(Tasks(None), dataset_files(folder))


def test_train_on_a_parquet_dataset_equals_one_file(run_recommend, tmp_path):
    """The train job on a folder of Parquet files, read by the cluster's workers, publishes the model of the same
    ratings in one file trained in this process (the same factors, bit for bit)."""
    rows = random_rows(6000, seed=5)
    folder = write_parts(tmp_path / "d", rows, 4)
    one = write_one(tmp_path / "all.csv", rows)
    common = ("--rank", 4, "--max-steps", 5, "--min-entries", 2, "--block-ratings", 1500, "--force-publish")
    assert run_recommend("train", "--ratings", folder, "--model-dir", tmp_path / "a", *common,
                         "--metrics", tmp_path / "a.json") == 0
    assert run_recommend("train", "--ratings", one, "--model-dir", tmp_path / "b", *common, "--scheduler", "",
                         "--metrics", tmp_path / "b.json") == 0
    from mixlib.recsys.store import ModelStore

    a, b = ModelStore(tmp_path / "a").load(), ModelStore(tmp_path / "b").load()
    for name, values in a.factors.named().items():
        np.testing.assert_array_equal(values, getattr(b.factors, name), err_msg=name)
    np.testing.assert_array_equal(a.seen_indices, b.seen_indices)
    ma, mb = (json.loads((tmp_path / f"{x}.json").read_text()) for x in "ab")
    assert ma["test"] == mb["test"] and ma["validation"] == mb["validation"]


def _reference_pattern(ratings):
    """The CSR (indptr, indices) of every rating, built from the gathered ratings."""
    import scipy.sparse as sp

    matrix = sp.csr_matrix((np.ones(len(ratings.values)), (ratings.users, ratings.items)),
                           shape=(len(ratings.user_ids), len(ratings.item_ids)))
    return matrix.indptr, matrix.indices


@pytest.mark.parametrize("on_cluster", [False, True])
def test_the_pattern_written_by_chunks_equals_the_gathered_one(tmp_path, client, on_cluster):
    """Chunks smaller than a shard and larger than one, written by tasks, hold the CSR indices of every rating."""
    import zarr

    from mixlib.recsys.dataset import pattern_indptr, write_pattern

    files = [write_one(tmp_path / "r.csv", random_rows(3000, seed=4))]
    prepared_ratings = prepare_dataset(Tasks(client if on_cluster else None), files, min_entries=0,
                                       validation=0.1, test=0.1, seed=3, shard_ratings=200)
    indptr, indices = _reference_pattern(prepared_ratings.gathered()[0])
    np.testing.assert_array_equal(pattern_indptr(prepared_ratings), indptr)
    for chunk in (37, 1000, 1 << 20):
        write_pattern(prepared_ratings, tmp_path / f"p{chunk}", indptr, chunk=chunk)
        np.testing.assert_array_equal(zarr.open_array(tmp_path / f"p{chunk}", mode="r")[...], indices)


def test_errors_baseline_and_digest_on_the_shards_equal_the_gathered_references(tmp_path):
    """Residual sums per part, the bias-only baseline's sweeps and the ratings' digest, computed shard by shard,
    equal a direct computation on the gathered ratings (and the digest does not depend on the shards)."""
    from mixlib.recsys.als import Factors, fit_baseline
    from mixlib.recsys.dataset import content_digest
    from mixlib.recsys.judging import baseline_rmse, part_errors
    from mixlib.recsys.store import Model

    files = [write_one(tmp_path / "r.csv", random_rows(4000, seed=5))]
    digests = []
    for shard_ratings in (150, 1 << 20):
        prepared_ratings = prepare_dataset(Tasks(None), files, min_entries=2, validation=0.1, test=0.1, seed=3,
                                           shard_ratings=shard_ratings)
        ratings, parts = prepared_ratings.gathered()
        n_users, n_items = len(ratings.user_ids), len(ratings.item_ids)
        rng = np.random.default_rng(0)
        factors = Factors(rng.normal(size=(n_users, 3)), rng.normal(size=n_users), rng.normal(size=(n_items, 3)),
                          rng.normal(size=n_items))
        model = Model(factors, 3.5, rng.normal(size=n_users) * 0.1, ratings.user_ids, ratings.item_ids,
                      None, None, {}, {}, (1.0, 5.0))
        errors = part_errors(prepared_ratings, model, clip=True)
        for name, rows in parts.items():
            predicted = np.clip(3.5 + factors.user_bias[ratings.users[rows]] + factors.item_bias[ratings.items[rows]]
                                + model.user_means[ratings.users[rows]]
                                + np.einsum("nk,nk->n", factors.user_factors[ratings.users[rows]],
                                            factors.item_factors[ratings.items[rows]]), 1, 5)
            residual = ratings.values[rows] - predicted
            np.testing.assert_allclose(errors[name]["rmse"], np.sqrt(np.mean(residual ** 2)), rtol=1e-12)
            np.testing.assert_allclose(errors[name]["mae"], np.mean(np.abs(residual)), rtol=1e-12)
        train, held = parts["train"], parts["validation"]
        mu, user_bias, item_bias = fit_baseline(ratings.users[train], ratings.items[train], ratings.values[train],
                                                n_users, n_items, 15.0, 10.0)
        expected = ratings.values[held] - (mu + user_bias[ratings.users[held]] + item_bias[ratings.items[held]])
        np.testing.assert_allclose(baseline_rmse(prepared_ratings, 15.0, 10.0, clip=False),
                                   np.sqrt(np.mean(expected ** 2)), rtol=1e-12)
        digests.append(content_digest(prepared_ratings))
    np.testing.assert_array_equal(*digests)


def test_a_worker_that_cannot_see_the_model_directory_says_so(tmp_path):
    from mixlib.recsys.shards import write_pattern_chunk

    with pytest.raises(InputError, match="a folder the workers share"):
        write_pattern_chunk(tmp_path / "elsewhere" / "seen_indices", 0, 2, 0, np.array([1, 2]))
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("block_ratings", [40, 300, 100_000])
def test_item_blocks_are_the_transpose_cut_by_the_data(tmp_path, block_ratings):
    """The item blocks of the shuffle (pieces sent to groups of item blocks, then cut) equal the CSR of R^T of
    the gathered ratings cut by :func:`row_cuts`, for the training ratings and for the validation ones beside
    them; with small blocks, many groups of several blocks."""
    import scipy.sparse as sp

    from mixlib.recsys.dataset import rating_blocks
    from mixlib.recsys.shards import row_cuts

    files = dataset_files(write_parts(tmp_path / "d", random_rows(3000, seed=5), 3))
    ready = prepare_dataset(Tasks(None), files, min_entries=0, validation=0.1, test=0.1, seed=3, shard_ratings=200)
    blocks = rating_blocks(ready, parts=(0,), shift=False, block_ratings=block_ratings, held=(1,))
    ratings, parts = ready.gathered()
    n_users, n_items = len(ratings.user_ids), len(ratings.item_ids)

    def transposed(rows):
        return sp.csr_matrix((ratings.values[rows], (ratings.items[rows], ratings.users[rows])),
                             shape=(n_items, n_users))

    train, held = transposed(parts["train"]), transposed(parts["validation"])
    bounds = row_cuts(train.indptr, block_ratings)
    assert len(blocks.by_item) == len(bounds) - 1 > (1 if block_ratings < 1000 else 0)
    for got_blocks, matrix in ((blocks.by_item, train), (blocks.held_by_item, held)):
        for (indptr, indices, values), start, stop in zip(got_blocks, bounds[:-1], bounds[1:]):
            want = matrix[start:stop]
            np.testing.assert_array_equal(indptr, want.indptr)
            np.testing.assert_array_equal(indices, want.indices)
            np.testing.assert_array_equal(values, want.data)
