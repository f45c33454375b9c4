"""Ratings: reading (user, item, rating) triplets and the seed notebook's preprocessing.

Reading gives :class:`Ratings` with contiguous user and item indices and the original ids they stand for.
Preprocessing: the cold-start filter, user-mean shifting and a seeded train / validation / test split. Each
step logs the shape before and after. Parquet input is read with pyarrow.
"""

import csv
import dataclasses
import logging
from pathlib import Path

import numpy as np

from .errors import InputError

log = logging.getLogger("mixlib")

TEXT_SUFFIXES = (".csv", ".tsv", ".data", ".txt")
PARQUET_COLUMNS = ("user", "item", "rating")
SNIFF_BYTES = 1 << 16


@dataclasses.dataclass(frozen=True)
class Ratings:
    """Ratings as triplets of contiguous indices, with the id maps.

    Attributes
    ----------
    users, items : ndarray (N,) int64, indices into ``user_ids`` and ``item_ids``
    values : ndarray (N,) float64
    user_ids, item_ids : ndarray, the original ids (int64 or str), sorted
    """

    users: np.ndarray
    items: np.ndarray
    values: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray

    @property
    def shape(self):
        """(users, items, ratings)."""
        return len(self.user_ids), len(self.item_ids), len(self.values)

    def subset(self, keep):
        """The ratings where ``keep (N,)`` is true, with the same id maps."""
        return Ratings(self.users[keep], self.items[keep], self.values[keep], self.user_ids, self.item_ids)

    def reindexed(self):
        """The same ratings with ids that no longer have a rating dropped from the maps."""
        users, user_index = np.unique(self.users, return_inverse=True)
        items, item_index = np.unique(self.items, return_inverse=True)
        return Ratings(user_index.ravel(), item_index.ravel(), self.values, self.user_ids[users],
                       self.item_ids[items])


# -------------------------------------------------------------------------------------------- reading

def read_ratings(path, drop_invalid=False):
    """Read ratings from ``.npy`` (an (N, 3) numeric array, never unpickled) or CSV/TSV text.

    Text files may have a header; the delimiter is detected; the columns are user, item, rating and
    optionally more (a timestamp), which are ignored. Ids may be integers or strings.

    Rows with a missing id or a missing or non-finite rating are an InputError naming their count and the
    first one, unless ``drop_invalid``, which skips and counts them. Of repeated (user, item) pairs the last
    one wins, and their count is logged.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"ratings file {path} does not exist")
    if path.stat().st_size == 0:
        raise InputError(f"ratings file {path} is empty (0 bytes)")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        users, items, values, first_row = _read_npy(path)
    elif suffix in TEXT_SUFFIXES:
        users, items, values, first_row = _read_text(path)
    elif suffix == ".parquet":
        users, items, values, first_row = _read_parquet(path)
    else:
        raise InputError(f"ratings file {path}: unknown format; use .npy, .csv, .tsv, .data, .txt or .parquet")
    return _clean(path, users, items, values, first_row, drop_invalid)


def _read_npy(path):
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise InputError(f"ratings file {path} is not a plain numeric .npy array ({e})") from None
    if array.ndim != 2 or array.shape[1] < 3 or not np.issubdtype(array.dtype, np.number):
        raise InputError(f"ratings file {path} holds a {array.dtype} array of shape {array.shape}; "
                         "expected (N, 3) numbers: user, item, rating")
    users, items = (_as_ids(column) for column in (array[:, 0], array[:, 1]))
    return users, items, array[:, 2].astype(np.float64), 0


def _read_parquet(path):
    """Columns ``user``, ``item`` and ``rating`` of a Parquet file (nulls become invalid rows)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
        table = pq.read_table(path, columns=[c for c in PARQUET_COLUMNS if c in schema.names])
    except (pa.ArrowException, OSError) as e:
        raise InputError(f"ratings file {path} is not a readable Parquet file ({e})") from None
    missing = [c for c in PARQUET_COLUMNS if c not in schema.names]
    if missing:
        raise InputError(f"ratings file {path} has no column {', '.join(missing)} (it has {', '.join(schema.names)}); "
                         f"name the columns {', '.join(PARQUET_COLUMNS)}")
    users, items = (_parquet_ids(table.column(c)) for c in PARQUET_COLUMNS[:2])
    rating = table.column("rating")
    if not (pa.types.is_integer(rating.type) or pa.types.is_floating(rating.type)):
        raise InputError(f"ratings file {path}: column rating holds {rating.type}, not numbers")
    return users, items, rating.to_numpy(zero_copy_only=False).astype(np.float64), 0


def _parquet_ids(column):
    """A Parquet id column as int64 (float64 with NaN where null) or as strings (NaN where null)."""
    import pyarrow as pa

    if pa.types.is_integer(column.type):
        values = column.to_numpy(zero_copy_only=False)
        return values.astype(np.int64) if column.null_count == 0 else values.astype(np.float64)
    if pa.types.is_floating(column.type):
        return _as_ids(column.to_numpy(zero_copy_only=False).astype(np.float64))
    return np.array([np.nan if v is None else str(v) for v in column.to_pylist()], dtype=object)


def _as_ids(column):
    """Integer ids when every value is a whole number, else the values as strings (NaN stays NaN)."""
    if np.issubdtype(column.dtype, np.integer):
        return column.astype(np.int64)
    finite = np.isfinite(column)
    if (column[finite] == np.round(column[finite])).all():
        return np.where(finite, column, np.nan)
    return column.astype(str)


def _read_text(path):
    rows = _text_rows(path, "ratings file", columns=3)
    first_row = 1 if rows and not _is_number(rows[0][2] if len(rows[0]) > 2 else "") else 0
    body = rows[first_row:]
    short = next((i for i, row in enumerate(body) if len(row) < 3), None)
    if short is not None:
        raise InputError(f"ratings file {path}, line {short + first_row + 1}: fewer than 3 columns "
                         "(user, item, rating)")
    users, items, values = (np.array([row[c].strip() for row in body], dtype=object) for c in range(3))
    return _text_ids(users), _text_ids(items), _numbers(values), first_row


def _text_rows(path, what, columns):
    """Every row of a delimited text file (the delimiter sniffed; one column needs none)."""
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        head = f.read(SNIFF_BYTES)
        try:
            dialect = csv.Sniffer().sniff(head, delimiters=",\t;| ")
        except csv.Error:
            if columns > 1:
                raise InputError(f"{what} {path}: cannot tell its delimiter; use commas or tabs") from None
            dialect = csv.excel
        f.seek(0)
        return [row for row in csv.reader(f, dialect) if row]


def read_id_columns(path, names):
    """The leading columns of a text file of ids, as strings: ``names`` says which (``("user", "item")``).

    A first line whose fields are ``names`` (any case) is a header. Rows with fewer fields or an empty id are
    an InputError naming the line.

    Returns
    -------
    list of ndarray (n,) str, one per name
    """
    path = Path(path)
    what = f"{'/'.join(names)} file"
    if not path.is_file():
        raise InputError(f"{what} {path} does not exist")
    rows = _text_rows(path, what, len(names))
    header = 1 if rows and [field.strip().lower() for field in rows[0][:len(names)]] == list(names) else 0
    body = rows[header:]
    bad = next((n for n, row in enumerate(body) if len(row) < len(names) or not all(f.strip() for f in
                                                                                      row[:len(names)])), None)
    if bad is not None:
        raise InputError(f"{what} {path}, line {bad + header + 1}: expected {len(names)} non-empty field(s) "
                         f"({', '.join(names)})")
    return [np.array([row[c].strip() for row in body], dtype=str) for c in range(len(names))]


def _is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def _numbers(texts):
    return parse_each(texts, float, np.nan)


def parse_each(texts, convert, missing):
    """``convert(text)`` of every text ``(n,)``, ``missing`` where it raises ValueError (numpy array of its type)."""
    out = np.full(len(texts), missing)
    for i, text in enumerate(texts):
        try:
            out[i] = convert(text)
        except ValueError:
            pass
    return out


def _text_ids(texts):
    """Integer ids when every non-empty id is an integer, else strings; an empty id is invalid (NaN)."""
    present = texts != ""
    try:
        values = np.array([int(t) for t in texts[present]], dtype=np.int64)
    except ValueError:
        return np.where(present, texts, np.nan)
    out = np.full(len(texts), np.nan)
    out[present] = values
    return out if not present.all() else values


def _clean(path, users, items, values, header_rows, drop_invalid):
    invalid = ~np.isfinite(values) | _missing(users) | _missing(items)
    if invalid.any():
        first = int(np.flatnonzero(invalid)[0]) + header_rows + 1
        if not drop_invalid:
            raise InputError(f"ratings file {path}: {int(invalid.sum())} row(s) with a missing or non-finite id or "
                             f"rating, the first at row {first}; fix them or pass --drop-invalid to skip them")
        log.warning("ratings file %s: skipped %d invalid row(s), the first at row %d", path, invalid.sum(), first)
    users, items, values = (a[~invalid] for a in (users, items, values))
    if users.dtype == np.float64:
        users = users.astype(np.int64)
    if items.dtype == np.float64:
        items = items.astype(np.int64)
    user_ids, user_index = np.unique(users.astype(str) if users.dtype == object else users, return_inverse=True)
    item_ids, item_index = np.unique(items.astype(str) if items.dtype == object else items, return_inverse=True)
    user_index, item_index = user_index.ravel(), item_index.ravel()
    last = _last_of_each_pair(user_index, item_index, len(item_ids))
    if len(last) < len(values):
        log.info("ratings file %s: %d repeated (user, item) pair(s); the last rating of each wins",
                 path, len(values) - len(last))
    ratings = Ratings(user_index[last], item_index[last], values[last].astype(np.float64), user_ids, item_ids)
    log.info("read %s: %d users, %d items, %d ratings", path, *ratings.shape)
    return ratings


def _missing(ids):
    if ids.dtype == object:
        return np.array([isinstance(v, float) and np.isnan(v) for v in ids], dtype=bool)
    if np.issubdtype(ids.dtype, np.floating):
        return ~np.isfinite(ids)
    return np.zeros(len(ids), dtype=bool)


def _last_of_each_pair(users, items, n_items):
    """Row numbers (ascending) of the last occurrence of each (user, item) pair."""
    pair = users.astype(np.int64) * n_items + items
    reversed_first = np.unique(pair[::-1], return_index=True)[1]
    return np.sort(len(pair) - 1 - reversed_first)


# --------------------------------------------------------------------------------------- preprocessing

def cold_start_filter(users, items, min_entries):
    """Which ratings survive the seed's cold-start filter.

    Users and items with ``min_entries`` or fewer ratings are removed, which can leave others with too
    few, until nothing changes. What remains is the largest set of ratings in which every user and every
    item has more than ``min_entries`` ratings (the bipartite (min_entries + 1)-core), whatever the order
    of removal; each round removes every user and item that falls short at once.

    Parameters
    ----------
    users, items : ndarray (N,) int, contiguous indices
    min_entries : int

    Returns
    -------
    keep : ndarray (N,) bool
    rounds : int, how many rounds removed something
    """
    keep = np.ones(len(users), dtype=bool)
    rounds = 0
    while True:
        user_counts = np.bincount(users[keep], minlength=users.max(initial=-1) + 1)
        item_counts = np.bincount(items[keep], minlength=items.max(initial=-1) + 1)
        short = keep & ((user_counts[users] <= min_entries) | (item_counts[items] <= min_entries))
        if not short.any():
            return keep, rounds
        rounds += 1
        before = int(keep.sum())
        keep &= ~short
        log.info("cold-start filter round %d: %d ratings -> %d", rounds, before, int(keep.sum()))


def user_means(ratings):
    """Mean rating ``(n_users,)`` of each user (0 for a user without ratings)."""
    totals = np.bincount(ratings.users, weights=ratings.values, minlength=len(ratings.user_ids))
    counts = np.bincount(ratings.users, minlength=len(ratings.user_ids))
    return np.divide(totals, counts, out=np.zeros(len(totals)), where=counts > 0)


def split(n_ratings, validation, test, seed):
    """A seeded split of ratings into train, validation and test.

    Parameters
    ----------
    n_ratings : int
    validation, test : int >= 0 (a count of ratings) or float in (0, 1) (a fraction of them)
    seed : int

    Returns
    -------
    train, validation, test : ndarray of row numbers, sorted
    """
    sizes = [_size(part, n_ratings, name) for part, name in ((validation, "validation"), (test, "test"))]
    if sum(sizes) >= n_ratings:
        raise InputError(f"validation ({sizes[0]}) and test ({sizes[1]}) ratings leave none of the {n_ratings} "
                         "to train on; ask for fewer")
    order = np.random.default_rng(seed).permutation(n_ratings)
    held_validation, held_test = order[:sizes[0]], order[sizes[0]:sizes[0] + sizes[1]]
    return np.sort(order[sum(sizes):]), np.sort(held_validation), np.sort(held_test)


def _size(part, n, name):
    if isinstance(part, float) and 0 < part < 1:
        return int(round(part * n))
    if isinstance(part, int) and part >= 0:
        return part
    raise InputError(f"{name} must be a count (a whole number >= 0) or a fraction in (0, 1), not {part!r}")
