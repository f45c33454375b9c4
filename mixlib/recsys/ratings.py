"""Ratings: reading (user, item, rating) triplets and the seed notebook's preprocessing.

Reading gives :class:`Ratings` with contiguous user and item indices and the original ids they stand for.
The format comes from the suffix, or from the content when the suffix is not known (NumPy and Parquet by their
magic bytes, delimited text by sniffing its delimiter). Columns are found by their header names: the common ones
(:data:`COMMON_NAMES`, any case) or names the caller gives; a file without a header is read by position, and a
first row that names no column but whose content says it is a header (a word above numeric ids) is refused.
Preprocessing: the cold-start filter, user-mean shifting and a seeded train / validation / test split. Each
step logs the shape before and after. Parquet input is read with pyarrow.
"""

import csv
import dataclasses
import logging
from pathlib import Path

import numpy as np

from ..core.errors import InputError

log = logging.getLogger("mixlib")

TEXT_SUFFIXES = (".csv", ".tsv", ".data", ".txt")
ROLES = ("user", "item", "rating")
# Header names recognised without --user-col / --item-col / --rating-col (compared in lower case).
COMMON_NAMES = {"user": ("user", "userid", "user_id"),
                "item": ("item", "itemid", "item_id", "movieid", "movie_id"),
                "rating": ("rating",)}
SNIFF_BYTES = 1 << 16
HEADER_EVIDENCE_ROWS = 1000  # the rows after the first that tell whether it is a header (_header_by_content)
NPY_MAGIC, PARQUET_MAGIC = b"\x93NUMPY", b"PAR1"
FORMATS = ".npy, .csv, .tsv, .data, .txt or .parquet"


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

def read_ratings(path, drop_invalid=False, names=None):
    """Read ratings from ``.npy`` (an (N, 3) numeric array, never unpickled), delimited text or Parquet.

    Text files may have a header; the delimiter is detected; the columns are user, item, rating and
    optionally more (a timestamp), which are ignored. Ids may be integers or strings. A file whose suffix is
    not known is read by what its content is.

    Parameters
    ----------
    path : str or Path
    drop_invalid : bool
        Rows with a missing id or a missing or non-finite rating are an InputError naming their count and the
        first one, unless ``drop_invalid``, which skips and counts them.
    names : dict or None
        ``{"user": ..., "item": ..., "rating": ...}``: header names of the columns (any case); a role left out
        or ``""`` takes a common name (:data:`COMMON_NAMES`), else its position (text only).

    Of repeated (user, item) pairs the last one wins, and their count is logged.
    """
    path = _existing_file(path, "ratings file")
    names = _given(names)
    kind = _kind(path)
    if names and kind == "npy":
        raise InputError(f"ratings file {path}: a .npy array has no column names (--{next(iter(names))}-col); its "
                         "columns are user, item, rating in that order")
    reader = {"npy": _read_npy, "text": _read_text, "parquet": _read_parquet}[kind]
    users, items, values, first_row = reader(path, names) if kind != "npy" else reader(path)
    return _clean(path, users, items, values, first_row, drop_invalid)


def _existing_file(path, what):
    """``path`` as a Path; InputError when it is missing, a folder or empty."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder; give one file ({FORMATS}): reading a folder of files is "
                         "not supported yet")
    if not path.is_file():
        raise InputError(f"{what} {path} does not exist")
    if path.stat().st_size == 0:
        raise InputError(f"{what} {path} is empty (0 bytes)")
    return path


def _given(names):
    """The roles that were given a column name: ``{role: name}`` without empty names."""
    return {role: name for role, name in (names or {}).items() if name}


def _kind(path):
    """'npy', 'parquet' or 'text' by the suffix, else by the content; InputError when neither tells."""
    suffix = path.suffix.lower()
    if suffix in (".npy", ".parquet"):
        return suffix[1:]
    if suffix in TEXT_SUFFIXES:
        return "text"
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES)
    if head.startswith(NPY_MAGIC):
        return "npy"
    if head.startswith(PARQUET_MAGIC):
        return "parquet"
    problem = _not_delimited(head)
    if problem:
        raise InputError(f"ratings file {path}: unknown format ({problem}); use {FORMATS}, or delimited text of "
                         "user, item, rating")
    return "text"


def _not_delimited(head, columns=3):
    """Why the first bytes ``head`` of a file are not delimited text of at least ``columns`` columns, or ''."""
    if b"\0" in head:
        return "binary content"
    lines = head.decode("utf-8", errors="replace").splitlines()
    if len(head) == SNIFF_BYTES:
        lines = lines[:-1]  # cut short by the read
    lines = [line for line in lines if line.strip()]
    try:
        dialect = csv.Sniffer().sniff("\n".join(lines), delimiters=",\t;| ")
    except csv.Error:
        return "no delimiter found"
    rows = list(csv.reader(lines, dialect))
    fields = min(len(row) for row in rows)
    if fields < columns:
        return f"rows of {fields} field(s), not user, item, rating"
    if not any(_is_number(field) for row in rows[1:] or rows for field in row):
        return "no numbers in its rows"
    return ""


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


def _read_parquet(path, names):
    """The user, item and rating columns of a Parquet file, found by name (nulls become invalid rows)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as e:
        raise InputError(f"ratings file {path} is not a readable Parquet file ({e})") from None
    found = _named_columns([name.lower() for name in schema.names], ROLES, names)
    missing = [role for role in ROLES if found[role] is None]
    if missing:
        raise InputError(f"ratings file {path} has no {_wanted(missing, names)} column (it has "
                         f"{', '.join(schema.names)}); name it with {_flags(missing)}")
    columns = [schema.names[found[role]] for role in ROLES]
    try:
        table = pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as e:
        raise InputError(f"ratings file {path} is not a readable Parquet file ({e})") from None
    users, items = (_parquet_ids(table.column(c)) for c in columns[:2])
    rating = table.column(columns[2])
    if not (pa.types.is_integer(rating.type) or pa.types.is_floating(rating.type)):
        raise InputError(f"ratings file {path}: column {columns[2]} holds {rating.type}, not numbers")
    return users, items, rating.to_numpy(zero_copy_only=False).astype(np.float64), 0


def _named_columns(fields, roles, names):
    """Where each role's column is among header ``fields`` (lower case): ``{role: position or None}``.

    A role with a given name looks for that name only; the others for their common names."""
    found = {}
    for role in roles:
        wanted = (names[role].lower(),) if role in names else COMMON_NAMES[role]
        found[role] = next((n for n, field in enumerate(fields) if field in wanted), None)
    return found


def _wanted(roles, names):
    """'item' or "'stars' (rating)": the columns a message says are missing."""
    return " or ".join(f"'{names[r]}' ({r})" if r in names else r for r in roles)


def _flags(roles):
    return " / ".join(f"--{role}-col" for role in roles)


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


def _read_text(path, names):
    rows = _text_rows(path, "ratings file", columns=3)
    first_row, positions = _text_columns(path, "ratings file", rows, ROLES, names)
    body = rows[first_row:]
    width = max(positions) + 1
    short = next((i for i, row in enumerate(body) if len(row) < width), None)
    if short is not None:
        raise InputError(f"ratings file {path}, line {short + first_row + 1}: fewer than {width} columns "
                         f"({', '.join(ROLES)})")
    users, items, values = (np.array([row[c].strip() for row in body], dtype=object) for c in positions)
    return _text_ids(users), _text_ids(items), _numbers(values), first_row


def _text_columns(path, what, rows, roles, names):
    """``(header lines (0 or 1), column of each role)`` of a text file of ``rows`` (lists of fields).

    The first row is a header when it holds a column name (a given one or a common one, :data:`COMMON_NAMES`), or
    when its content says so (:func:`_header_by_content`). In a header, a role whose name is absent takes its
    position in ``roles`` if no named column is there; a header that names no column is refused (it would be read
    by position, or as data). Without a header, every role takes its position.
    """
    first = rows[0] if rows else []
    found = _named_columns([field.strip().lower() for field in first], roles, names)
    if not any(v is not None for v in found.values()):
        if _header_by_content(first, rows[1:1 + HEADER_EVIDENCE_ROWS], roles):
            raise InputError(_unknown_header(path, what, first, roles, names))
        if names:
            raise InputError(f"{what} {path} has no header line, so {_flags(list(names))} cannot name its "
                             "columns; add a header or leave the column names out (columns by position)")
        return 0, list(range(len(roles)))
    missing = [role for role in roles if found[role] is None and (role in names or
                                                                    roles.index(role) in found.values())]
    if missing:
        raise InputError(f"{what} {path}: its header ({', '.join(first)}) has no {_wanted(missing, names)} "
                         f"column; name it with {_flags(missing)}")
    return 1, [roles.index(role) if found[role] is None else found[role] for role in roles]


def _header_by_content(first, below, roles):
    """Whether the first row ``first`` of a text file is a header by its content, whatever its names.

    Ratings are numbers, so a ratings file's first row is a header when its rating field (the third) is not a
    number. Ids may be strings, so an id field that is not a number tells only next to ids that are: the first row
    is a header when one of its leading ``len(roles)`` fields is a word (not empty, not a number) while the rows
    ``below`` (a sample of those that follow) all hold numbers in that column. A file whose ids are strings is
    therefore read from its first row unless that row names its columns. A first row shorter than ``roles`` is
    never a header here (the reader then says the rows are too short).
    """
    if len(first) < len(roles):
        return False
    if "rating" in roles and not _is_number(first[roles.index("rating")]):
        return True
    return bool(below) and any(_word(first[c]) and all(len(row) > c and _is_number(row[c]) for row in below)
                               for c in range(len(roles)))


def _word(field):
    """A field that is neither empty nor a number (a column name, or a string id)."""
    return bool(field.strip()) and not _is_number(field)


def _unknown_header(path, what, first, roles, names):
    """The message for a header whose names are not known: the columns found and the flags that name them."""
    if names:
        return (f"{what} {path}: its header ({', '.join(first)}) has no {_wanted(list(names), names)} column; "
                f"name the columns with {_flags(roles)}")
    flags = " and ".join(f"--{role}-col" for role in roles)
    example = " ".join(f"--{role}-col {first[n].strip()}" for n, role in enumerate(roles))
    return (f"{what} {path}: its first row ({', '.join(first)}) is a header (words above numbers) naming no known "
            f"column; name them with {flags} (here perhaps {example}), or rename them {', '.join(roles)}")


def _text_rows(path, what, columns):
    """Every row of a delimited text file (the delimiter sniffed; one column needs none)."""
    with open(path, "rb") as f:
        if b"\0" in f.read(SNIFF_BYTES):
            raise InputError(f"{what} {path} is not a text file (binary content); give delimited text")
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


def read_id_columns(path, roles, names=None):
    """Id columns of a text or Parquet file, as strings: ``roles`` says which (``("user", "item")``).

    Columns are found as :func:`read_ratings` finds them (``names``: given header names by role; the common
    names; else the leading columns of a text file without a header). Rows with fewer fields or an empty id are
    an InputError naming the line.

    Returns
    -------
    list of ndarray (n,) str, one per role
    """
    what = f"{'/'.join(roles)} file"
    path = _existing_file(path, what)
    names = _given(names)
    if path.suffix.lower() == ".parquet" or _starts_with(path, PARQUET_MAGIC):
        return _parquet_id_columns(path, what, roles, names)
    rows = _text_rows(path, what, len(roles))
    header, positions = _text_columns(path, what, rows, roles, names)
    body = rows[header:]
    bad = next((n for n, row in enumerate(body) if len(row) <= max(positions)
                or not all(row[c].strip() for c in positions)), None)
    if bad is not None:
        raise InputError(f"{what} {path}, line {bad + header + 1}: expected {len(roles)} non-empty field(s) "
                         f"({', '.join(roles)})")
    return [np.array([row[c].strip() for row in body], dtype=str) for c in positions]


def _starts_with(path, magic):
    with open(path, "rb") as f:
        return f.read(len(magic)) == magic


def _parquet_id_columns(path, what, roles, names):
    """The id columns ``(n,)`` str of a Parquet file, found by name; a null id is an InputError."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
        found = _named_columns([name.lower() for name in schema.names], roles, names)
        missing = [role for role in roles if found[role] is None]
        if missing:
            raise InputError(f"{what} {path} has no {_wanted(missing, names)} column (it has "
                             f"{', '.join(schema.names)}); name it with {_flags(missing)}")
        table = pq.read_table(path, columns=[schema.names[found[role]] for role in roles])
    except (pa.ArrowException, OSError) as e:
        raise InputError(f"{what} {path} is not a readable Parquet file ({e})") from None
    nulls = sum(column.null_count for column in table.columns)
    if nulls:
        raise InputError(f"{what} {path}: {nulls} null id(s); remove those rows")
    return [np.array([str(v) for v in column.to_pylist()], dtype=str) for column in table.columns]


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
