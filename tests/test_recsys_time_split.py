"""The split by time against a brute-force reference, and reading the time column (and files without ratings).

References are independent of mixlib: a plain loop over users, and times computed with ``calendar.timegm``.
"""

import calendar
import datetime
import math

import numpy as np
import pytest

from mixlib.core.errors import InputError
from mixlib.recsys.ratings import OPTIONAL_ROLES, ROLES, parse_time, read_id_columns, read_ratings, split_by_time

MAY_1 = calendar.timegm((2024, 5, 1, 0, 0, 0))
MAY_1_10H = calendar.timegm((2024, 5, 1, 10, 0, 0))


def write(path, text):
    path.write_text(text)
    return path


def timed(ratings):
    """The ratings as a dict (user id, item id) -> (value, time), for comparisons."""
    return {(ratings.user_ids[u].item(), ratings.item_ids[i].item()): (v, t)
            for u, i, v, t in zip(ratings.users, ratings.items, ratings.values, ratings.times)}


# ------------------------------------------------------------------------------------ the split

def held(part, n):
    """How many of n interactions a part holds out: a count, or a fraction rounded half up."""
    return math.floor(part * n + 0.5) if isinstance(part, float) else part


def reference_split(users, times, validation, test, cutoff=None):
    """One user at a time: order by (time, row), hold out the last ones, give back until one trains."""
    parts = {"train": [], "validation": [], "test": []}
    by_user = {}
    for row, user in enumerate(users):
        by_user.setdefault(int(user), []).append(row)
    for rows in by_user.values():
        rows = sorted(rows, key=lambda r: (times[r], r))
        if cutoff is not None:
            parts["test"] += [r for r in rows if times[r] >= cutoff]
            rows = [r for r in rows if times[r] < cutoff]
        n = len(rows)
        t, v = (0 if cutoff is not None else held(test, n)), held(validation, n)
        while t + v > n - 1 and v > 0:
            v -= 1
        while t > n - 1 and t > 0:
            t -= 1
        parts["train"] += rows[:n - t - v]
        parts["validation"] += rows[n - t - v:n - t]
        parts["test"] += rows[n - t:]
    return tuple(np.array(sorted(parts[k]), dtype=np.int64) for k in ("train", "validation", "test"))


def random_interactions(seed, n=1500):
    """Users with 1 to ~60 interactions each (many with 1 to 3), times with many ties."""
    rng = np.random.default_rng(seed)
    users = rng.zipf(1.5, n) % 80
    times = rng.integers(0, 40, n).astype(np.float64) * 3600 + MAY_1
    return users, times


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("validation, test", [(0.1, 0.2), (0.25, 0.5), (1, 1), (0, 1), (2, 3), (0.5, 0), (0, 0),
                                              (3, 0.3)])
def test_split_by_time_equals_brute_force(seed, validation, test):
    users, times = random_interactions(seed)
    got = split_by_time(users, times, validation, test)
    expected = reference_split(users, times, validation, test)
    for part, want in zip(got, expected):
        np.testing.assert_array_equal(part, want)
    assert np.array_equal(np.sort(np.concatenate(got)), np.arange(len(users)))
    assert set(users[got[0]]) == set(users)  # every user trains on something


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("validation", [0.2, 1, 0])
def test_split_by_time_with_a_cutoff_equals_brute_force(seed, validation):
    users, times = random_interactions(seed)
    cutoff = MAY_1 + 30 * 3600
    train, held_validation, held_test = split_by_time(users, times, validation, 5, cutoff=cutoff)
    expected = reference_split(users, times, validation, None, cutoff=cutoff)
    for part, want in zip((train, held_validation, held_test), expected):
        np.testing.assert_array_equal(part, want)
    np.testing.assert_array_equal(held_test, np.flatnonzero(times >= cutoff))  # test= is not used
    assert set(users[train]) == set(users[times < cutoff])


def test_leave_last_out_and_fractions_by_hand():
    # User 0: rows 0..4 at times 5, 1, 4, 2, 3 -> by time: rows 1, 3, 4, 2, 0. User 1: rows 5, 6 at the same time.
    users = np.array([0, 0, 0, 0, 0, 1, 1])
    times = np.array([5, 1, 4, 2, 3, 7, 7], dtype=float)
    train, validation, test = split_by_time(users, times, 1, 1)
    assert [list(train), list(validation), list(test)] == [[1, 3, 4, 5], [2], [0, 6]]  # a tie goes by row number
    # Test 0.5: of 5, 2.5 -> 3 (halves round up); of 2, 1. Validation 0.3: of 5, 1.5 -> 2, cut to 1 so that one
    # rating trains; of 2, 0.6 -> 1, cut to 0.
    train, validation, test = split_by_time(users, times, 0.3, 0.5)
    assert [list(train), list(validation), list(test)] == [[1, 5], [3], [0, 2, 4, 6]]


def test_every_user_keeps_one_training_interaction():
    # n_u = 1, 2, 3, 4 with validation 2 and test 2: the validation part gives way first, then the test part.
    users = np.repeat([0, 1, 2, 3], [1, 2, 3, 4])
    times = np.arange(len(users), dtype=float)
    train, validation, test = split_by_time(users, times, 2, 2)
    per_user = [(int((users[train] == u).sum()), int((users[validation] == u).sum()),
                 int((users[test] == u).sum())) for u in range(4)]
    assert per_user == [(1, 0, 0), (1, 0, 1), (1, 0, 2), (1, 1, 2)]


def test_split_by_time_is_deterministic_and_ignores_row_order_without_ties():
    rng = np.random.default_rng(5)
    users, times = rng.integers(0, 30, 600), rng.permutation(600).astype(float)
    first = split_by_time(users, times, 0.2, 1)
    assert all(np.array_equal(a, b) for a, b in zip(first, split_by_time(users, times, 0.2, 1)))
    shuffle = rng.permutation(600)
    again = split_by_time(users[shuffle], times[shuffle], 0.2, 1)
    for part, other in zip(first, again):
        assert set(times[part]) == set(times[shuffle][other])


def test_split_by_time_refusals():
    users, times = np.array([0, 0, 1]), np.array([1.0, 2.0, 3.0])
    with pytest.raises(InputError, match="needs a time column.*--time-col"):
        split_by_time(users, None, 0.1, 0.1)
    with pytest.raises(InputError, match="none is left to train on"):
        split_by_time(users, times, 0, 0, cutoff=1.0)
    with pytest.raises(InputError, match="fraction"):
        split_by_time(users, times, 1.5, 0)
    with pytest.raises(InputError, match="fraction"):
        split_by_time(users, times, 0, -1)
    with pytest.raises(InputError, match="finite time"):
        split_by_time(users, np.array([1.0, np.nan, 3.0]), 0, 1)
    with pytest.raises(InputError, match="none to train on"):
        split_by_time(np.array([], dtype=int), np.array([]), 0, 1)


@pytest.mark.parametrize("text, seconds", [("2024-05-01", MAY_1), ("2024-05-01T10:00:00", MAY_1_10H),
                                           ("2024-05-01 10:00:00", MAY_1_10H), ("2024-05-01T12:00:00+02:00", MAY_1_10H),
                                           ("2024-05-01T10:00:00Z", MAY_1_10H),
                                           (" 1714557600 ", MAY_1_10H), (1714557600, MAY_1_10H), (0.5, 0.5),
                                           (datetime.date(2024, 5, 1), MAY_1),
                                           (datetime.datetime(2024, 5, 1, 10), MAY_1_10H)])
def test_parse_time(text, seconds):
    assert parse_time(text) == seconds


@pytest.mark.parametrize("text", ["yesterday", "", "2024-13-01", "nan", "inf", None, True])
def test_parse_time_refuses_what_is_not_a_time(text):
    with pytest.raises(InputError, match="is not a time: give seconds since 1970-01-01 UTC, or an ISO date"):
        parse_time(text)


# ---------------------------------------------------------------------------------- reading times

def test_time_is_an_optional_role():
    assert ROLES == ("user", "item", "rating") and OPTIONAL_ROLES == ("time",)


def test_u_data_without_header_keeps_the_4th_column_as_times(tmp_path):
    path = write(tmp_path / "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n")
    assert timed(read_ratings(path)) == {(196, 242): (3.0, 881250949.0), (186, 302): (3.0, 891717742.0),
                                         (22, 377): (1.0, 878887116.0)}
    assert read_ratings(path).times.dtype == np.float64
    assert read_ratings(write(tmp_path / "three.csv", "1,2,3\n4,5,1\n")).times is None


def test_movielens_csv_header_and_the_last_of_a_repeated_pair(tmp_path):
    path = write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n"
                                           "1,1029,3.0,1260759179\n1,31,4.0,1260759185\n")
    assert timed(read_ratings(path)) == {(1, 31): (4.0, 1260759185.0), (1, 1029): (3.0, 1260759179.0)}
    plain = write(tmp_path / "plain.csv", "userId,movieId,rating\n1,31,2.5\n")
    assert read_ratings(plain).times is None


def test_iso_dates_any_header_case_and_a_given_name(tmp_path):
    path = write(tmp_path / "r.csv", "User,Item,Rating,Date\n1,10,4,2024-05-01\n2,10,3,2024-05-01T10:00:00\n"
                                     "3,10,5,2024-05-01 10:00:00\n4,10,1,2024-05-01T12:00:00+02:00\n")
    assert {key: t for key, (_, t) in timed(read_ratings(path)).items()} == {
        (1, 10): MAY_1, (2, 10): MAY_1_10H, (3, 10): MAY_1_10H, (4, 10): MAY_1_10H}
    named = write(tmp_path / "named.csv", "when,user,item,rating\n2024-05-01,1,10,4\n")
    assert timed(read_ratings(named, names={"time": "WHEN"})) == {(1, 10): (4.0, MAY_1)}
    assert read_ratings(named).times is None  # 'when' is no common name, and a header's columns go by name
    with pytest.raises(InputError, match=r"has no 'stamp' \(time\) column; name it with --time-col"):
        read_ratings(named, names={"time": "stamp"})
    with pytest.raises(InputError, match="has no header line, so --time-col cannot name"):
        read_ratings(write(tmp_path / "bare.csv", "1,10,4,5\n"), names={"time": "when"})


def test_parquet_timestamps_dates_and_numbers(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    moments = [datetime.datetime(2024, 5, 1, 10), datetime.datetime(2024, 5, 1, 0)]
    for name, column in [("ms_utc", pa.array(moments, pa.timestamp("ms", tz="UTC"))),
                         ("ns", pa.array(moments, pa.timestamp("ns"))),
                         ("seconds", pa.array([MAY_1_10H, MAY_1], pa.int64())),
                         ("iso", pa.array(["2024-05-01T10:00:00", "2024-05-01"]))]:
        pq.write_table(pa.table({"user": [1, 2], "item": [7, 7], "rating": [4.0, 2.0], "timestamp": column}),
                       tmp_path / f"{name}.parquet")
        assert timed(read_ratings(tmp_path / f"{name}.parquet")) == {(1, 7): (4.0, MAY_1_10H), (2, 7): (2.0, MAY_1)}
    pq.write_table(pa.table({"user": [1], "item": [7], "rating": [4.0],
                             "Day": pa.array([datetime.date(2024, 5, 1)], pa.date32())}), tmp_path / "d.parquet")
    assert timed(read_ratings(tmp_path / "d.parquet", names={"time": "day"})) == {(1, 7): (4.0, MAY_1)}
    with pytest.raises(InputError, match=r"no 'stamp' \(time\) column.*--time-col"):
        read_ratings(tmp_path / "d.parquet", names={"time": "stamp"})
    pq.write_table(pa.table({"user": [1, 2], "item": [7, 7], "rating": [4.0, 2.0],
                             "ts": pa.array([moments[0], None], pa.timestamp("s"))}), tmp_path / "null.parquet")
    with pytest.raises(InputError, match=r"1 row\(s\) with a missing or non-finite id, rating or time.*row 2"):
        read_ratings(tmp_path / "null.parquet")
    assert timed(read_ratings(tmp_path / "null.parquet", drop_invalid=True)) == {(1, 7): (4.0, MAY_1_10H)}


def test_npy_with_a_4th_column(tmp_path):
    np.save(tmp_path / "r.npy", np.array([[0, 5, 4.0, MAY_1], [1, 5, 3.5, MAY_1_10H]]))
    assert timed(read_ratings(tmp_path / "r.npy")) == {(0, 5): (4.0, MAY_1), (1, 5): (3.5, MAY_1_10H)}


@pytest.mark.parametrize("bad_time", ["", "soon", "nan", "2024-02-30"])
def test_invalid_times_are_invalid_rows(tmp_path, bad_time):
    path = write(tmp_path / "r.csv", f"user,item,rating,time\n1,2,3,10\n1,3,4,{bad_time}\n4,5,1,20\n"
                                     f"4,6,2,{bad_time}\n")
    with pytest.raises(InputError, match=r"2 row\(s\) with a missing or non-finite id, rating or time, the first "
                                         r"at row 3.*--drop-invalid"):
        read_ratings(path)
    assert timed(read_ratings(path, drop_invalid=True)) == {(1, 2): (3.0, 10.0), (4, 5): (1.0, 20.0)}
    empty = write(tmp_path / "empty.tsv", "1\t2\t3\t10\n1\t3\t4\t\n")  # no header, no time in the second row
    with pytest.raises(InputError, match=r"1 row\(s\).*first at row 2"):
        read_ratings(empty)


def test_a_column_found_without_a_name_that_holds_no_times_is_not_read(tmp_path):
    path = write(tmp_path / "r.csv", "1,2,3,good\n4,5,1,bad\n")
    ratings = read_ratings(path)
    assert ratings.times is None and ratings.shape == (2, 2, 2)
    dated = write(tmp_path / "dated.csv", "user,item,rating,date\n1,2,3,05/01/2024\n")
    assert read_ratings(dated).times is None
    with pytest.raises(InputError, match="first at row 2"):
        read_ratings(dated, names={"time": "date"})  # named: its values must be times


def test_subset_and_reindexed_keep_times(tmp_path):
    path = write(tmp_path / "r.csv", "user,item,rating,ts\n1,2,3,10\n5,3,4,20\n1,3,5,30\n")
    ratings = read_ratings(path)
    keep = ratings.items == 1
    subset = ratings.subset(keep).reindexed()
    assert timed(subset) == {(5, 3): (4.0, 20.0), (1, 3): (5.0, 30.0)}


def test_pair_files_ignore_a_time_column_name(tmp_path):
    users, items = read_id_columns(write(tmp_path / "pairs.csv", "1,10\n2,20\n"), ("user", "item"),
                                   {"user": "", "time": "when"})
    assert list(users) == ["1", "2"] and list(items) == ["10", "20"]


# ------------------------------------------------------------------------------ files without ratings

def test_two_columns_are_read_as_ones_when_values_are_optional(tmp_path, caplog):
    import pyarrow as pa
    import pyarrow.parquet as pq

    bare = write(tmp_path / "pairs.csv", "1,10\n2,20\n1,20\n")
    header = write(tmp_path / "header.tsv", "userId\tmovieId\n1\t10\n2\t20\n1\t20\n")
    pq.write_table(pa.table({"user": [1, 2, 1], "item": [10, 20, 20]}), tmp_path / "pairs.parquet")
    np.save(tmp_path / "pairs.npy", np.array([[1, 10], [2, 20], [1, 20]]))
    expected = {(1, 10): 1.0, (2, 20): 1.0, (1, 20): 1.0}
    for path in (bare, header, tmp_path / "pairs.parquet", tmp_path / "pairs.npy"):
        with caplog.at_level("INFO", logger="mixlib"):
            ratings = read_ratings(path, values_optional=True)
        assert {(ratings.user_ids[u].item(), ratings.item_ids[i].item()): v
                for u, i, v in zip(ratings.users, ratings.items, ratings.values)} == expected
        assert ratings.times is None and "no rating column" in caplog.text
    (tmp_path / "pairs.unknown").write_bytes(bare.read_bytes())
    assert read_ratings(tmp_path / "pairs.unknown", values_optional=True).shape == (2, 2, 3)


def test_without_values_optional_the_old_errors_hold(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    with pytest.raises(InputError, match="line 1: fewer than 3 columns"):
        read_ratings(write(tmp_path / "pairs.csv", "1,10\n2,20\n"))
    with pytest.raises(InputError, match="line 2: fewer than 3 columns"):
        read_ratings(write(tmp_path / "header.csv", "user,item\n1,10\n"))
    pq.write_table(pa.table({"user": [1], "item": [10]}), tmp_path / "pairs.parquet")
    with pytest.raises(InputError, match="has no rating column.*--rating-col"):
        read_ratings(tmp_path / "pairs.parquet")
    np.save(tmp_path / "pairs.npy", np.array([[1, 10]]))
    with pytest.raises(InputError, match=r"expected \(N, 3\) numbers"):
        read_ratings(tmp_path / "pairs.npy")
    (tmp_path / "pairs.bin").write_text("1,2\n3,4\n")
    with pytest.raises(InputError, match=r"unknown format \(rows of 2 field\(s\), not user, item, rating\)"):
        read_ratings(tmp_path / "pairs.bin")


def test_values_optional_with_times_and_what_stays_refused(tmp_path):
    path = write(tmp_path / "r.csv", "user,item,timestamp\n1,10,100\n2,10,200\n")
    ratings = read_ratings(path, values_optional=True)
    assert timed(ratings) == {(1, 10): (1.0, 100.0), (2, 10): (1.0, 200.0)}
    with pytest.raises(InputError, match="has no rating column; name it with --rating-col"):
        read_ratings(path)  # a time column is no rating
    scored = write(tmp_path / "scored.csv", "user,item,score\n1,10,3\n")
    ratings = read_ratings(scored, values_optional=True)  # its rating is 'score', by position, as without
    assert ratings.times is None and list(ratings.values) == [3.0]
    with pytest.raises(InputError, match=r"has no 'stars' \(rating\) column"):
        read_ratings(path, names={"rating": "stars"}, values_optional=True)
    with pytest.raises(InputError, match="is a header .words above numbers. naming no known column.*--item-col mid"):
        read_ratings(write(tmp_path / "unknown.csv", "uid,mid\n1,10\n"), values_optional=True)
