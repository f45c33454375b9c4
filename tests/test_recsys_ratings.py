"""Reading ratings and the seed's preprocessing, against brute-force references."""

import numpy as np
import pytest

from mixlib.core.errors import InputError
from mixlib.recsys.ratings import cold_start_filter, read_ratings, split, user_means


def write(path, text):
    path.write_text(text)
    return path


def triplets(ratings):
    """The ratings as a set of (user id, item id, value), for comparisons."""
    return {(ratings.user_ids[u].item(), ratings.item_ids[i].item(), v)
            for u, i, v in zip(ratings.users, ratings.items, ratings.values)}


def test_movielens_u_data_tab_separated_without_header(tmp_path):
    path = write(tmp_path / "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n"
                                      "196\t377\t4.5\t878887116\n")
    ratings = read_ratings(path)
    assert ratings.shape == (3, 3, 4)
    assert triplets(ratings) == {(196, 242, 3.0), (186, 302, 3.0), (22, 377, 1.0), (196, 377, 4.5)}
    assert ratings.user_ids.dtype == np.int64
    # Contiguous indices: 0..n-1, mapped in id order.
    assert set(ratings.users) == {0, 1, 2} and list(ratings.user_ids) == [22, 186, 196]


def test_movielens_ratings_csv_with_header(tmp_path):
    path = write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n"
                                           "1,1029,3.0,1260759179\n7,31,4.0,1260759185\n")
    ratings = read_ratings(path)
    assert triplets(ratings) == {(1, 31, 2.5), (1, 1029, 3.0), (7, 31, 4.0)}


def test_string_ids(tmp_path):
    path = write(tmp_path / "r.tsv", "user\titem\trating\nann\tpizza place\t4\nbob\tpizza place\t2\nann\tsushi\t5\n")
    ratings = read_ratings(path)
    assert triplets(ratings) == {("ann", "pizza place", 4.0), ("bob", "pizza place", 2.0), ("ann", "sushi", 5.0)}


def test_npy_triplets_and_no_unpickling(tmp_path):
    array = np.array([[0, 5, 4.0], [1, 5, 3.5], [0, 7, 1.0]])
    np.save(tmp_path / "r.npy", array)
    assert triplets(read_ratings(tmp_path / "r.npy")) == {(0, 5, 4.0), (1, 5, 3.5), (0, 7, 1.0)}
    np.save(tmp_path / "objects.npy", np.array([[0, "a", 1.0]], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="not a plain numeric"):
        read_ratings(tmp_path / "objects.npy")


def test_parquet_with_integer_or_string_ids_and_nulls(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"user": [10, 20, 10, 30], "item": ["x", "y", "y", "x"], "rating": [1.5, 2.0, 3.0, 4.0],
                             "timestamp": [1, 2, 3, 4]}), tmp_path / "r.parquet")
    assert triplets(read_ratings(tmp_path / "r.parquet")) == {(10, "x", 1.5), (20, "y", 2.0), (10, "y", 3.0),
                                                              (30, "x", 4.0)}
    pq.write_table(pa.table({"user": ["a", None, "c"], "item": [1, 2, 3], "rating": [1.0, 2.0, None]}),
                   tmp_path / "nulls.parquet")
    with pytest.raises(InputError, match=r"2 row\(s\).*first at row 2"):
        read_ratings(tmp_path / "nulls.parquet")
    assert triplets(read_ratings(tmp_path / "nulls.parquet", drop_invalid=True)) == {("a", 1, 1.0)}


@pytest.mark.parametrize("columns, message", [({"user": [1], "movie": [2], "rating": [3.0]},
                                               "no item column.*--item-col"),
                                              ({"user": [1], "item": [2], "rating": ["good"]}, "not numbers")])
def test_bad_parquet_columns(tmp_path, columns, message):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), tmp_path / "r.parquet")
    with pytest.raises(InputError, match=message):
        read_ratings(tmp_path / "r.parquet")
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(InputError, match="not a readable Parquet file"):
        read_ratings(tmp_path / "junk.parquet")


@pytest.mark.parametrize("bad_line", ["3,,4", ",9,4", "3,9,", "3,9,nan", "3,9,inf", "3,9,good"])
def test_invalid_rows_are_an_error_naming_count_and_first_row(tmp_path, bad_line):
    path = write(tmp_path / "r.csv", f"user,item,rating\n1,2,3\n{bad_line}\n4,5,1\n{bad_line}\n")
    with pytest.raises(InputError, match=r"2 row\(s\).*first at row 3.*--drop-invalid"):
        read_ratings(path)
    ratings = read_ratings(path, drop_invalid=True)
    assert triplets(ratings) == {(1, 2, 3.0), (4, 5, 1.0)}


def test_repeated_pairs_last_wins(tmp_path):
    path = write(tmp_path / "r.csv", "1,2,3\n1,3,1\n1,2,5\n2,2,4\n1,2,2\n")
    ratings = read_ratings(path)
    assert triplets(ratings) == {(1, 2, 2.0), (1, 3, 1.0), (2, 2, 4.0)}


@pytest.mark.parametrize("content,message", [("", "empty"), ("a,b\n1,2\n", "fewer than 3 columns"),
                                             ("a\n", "delimiter")])
def test_bad_files(tmp_path, content, message):
    path = write(tmp_path / "r.csv", content)
    with pytest.raises(InputError, match=message):
        read_ratings(path)


def test_missing_and_unknown_format(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_ratings(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="unknown format"):
        read_ratings(write(tmp_path / "r.xlsx", "x"))


def test_user_means_against_brute_force(tmp_path):
    rng = np.random.default_rng(0)
    lines = "".join(f"{rng.integers(0, 9)},{rng.integers(0, 30)},{rng.integers(1, 11) / 2}\n" for _ in range(200))
    ratings = read_ratings(write(tmp_path / "r.csv", lines))
    means = user_means(ratings)
    for u in range(len(ratings.user_ids)):
        np.testing.assert_allclose(means[u], ratings.values[ratings.users == u].mean())


@pytest.mark.parametrize("validation,test", [(200, 200), (0.1, 0.2), (0, 5)])
def test_split_is_seeded_disjoint_and_complete(validation, test):
    train, held_validation, held_test = split(1000, validation, test, seed=3)
    expected = [round(p * 1000) if isinstance(p, float) else p for p in (validation, test)]
    assert (len(held_validation), len(held_test)) == tuple(expected)
    assert np.array_equal(np.sort(np.concatenate([train, held_validation, held_test])), np.arange(1000))
    again = split(1000, validation, test, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip((train, held_validation, held_test), again))
    assert not np.array_equal(split(1000, validation, test, seed=4)[1], held_validation) or validation == 0


def test_split_refuses_to_leave_nothing_to_train():
    with pytest.raises(InputError, match="none"):
        split(100, 60, 40, seed=0)
    with pytest.raises(InputError, match="fraction"):
        split(100, 1.5, 0, seed=0)


def brute_force_core(users, items, min_entries):
    """Remove one short user or item at a time, until none is left."""
    alive = set(range(len(users)))
    while True:
        user_counts, item_counts = {}, {}
        for r in alive:
            user_counts[users[r]] = user_counts.get(users[r], 0) + 1
            item_counts[items[r]] = item_counts.get(items[r], 0) + 1
        short = [r for r in alive if user_counts[users[r]] <= min_entries or item_counts[items[r]] <= min_entries]
        if not short:
            return np.array(sorted(alive), dtype=int)
        victim_user = users[short[0]]
        alive = {r for r in alive if users[r] != victim_user} if user_counts[victim_user] <= min_entries \
            else {r for r in alive if items[r] != items[short[0]]}


@pytest.mark.parametrize("seed", range(6))
def test_cold_start_filter_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    n_users, n_items = rng.integers(20, 60), rng.integers(10, 40)
    pairs = np.unique(np.column_stack([rng.zipf(1.6, 900) % n_users, rng.zipf(1.4, 900) % n_items]), axis=0)
    users, items = pairs[:, 0], pairs[:, 1]
    min_entries = int(rng.integers(1, 5))
    keep, rounds = cold_start_filter(users, items, min_entries)
    np.testing.assert_array_equal(np.flatnonzero(keep), brute_force_core(users, items, min_entries))
    kept_users, kept_items = users[keep], items[keep]
    if keep.any():
        assert np.bincount(kept_users)[np.unique(kept_users)].min() > min_entries
        assert np.bincount(kept_items)[np.unique(kept_items)].min() > min_entries


def test_cold_start_filter_needs_several_rounds():
    # A 2x2 core, and a chain hanging from it: item 3 -> user 3 -> item 2 -> user 2 fall one per round.
    users = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    items = np.array([0, 1, 0, 1, 0, 2, 2, 3])
    keep, rounds = cold_start_filter(users, items, 1)
    assert rounds == 4
    np.testing.assert_array_equal(np.flatnonzero(keep), brute_force_core(users, items, 1))
