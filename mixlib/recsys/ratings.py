"""Ratings: reading (user, item, rating) triplets and the seed notebook's preprocessing.

Reading gives :class:`Ratings` with contiguous user and item indices and the original ids they stand for, and the
time of each rating when the file has a time column. The format comes from the suffix, or from the content when
the suffix is not known (NumPy and Parquet by their magic bytes, delimited text by sniffing its delimiter).
Columns are found by their header names: the common ones (:data:`COMMON_NAMES`, any case) or names the caller
gives; a file without a header is read by position, and a first row that names no column but whose content says
it is a header (a word above numeric ids) is refused. For implicit feedback a file of user and item columns only
may be read, every rating 1. Preprocessing: the cold-start filter, user-mean shifting, a seeded train /
validation / test split and a split by time. Each step logs the shape before and after. Parquet input is read
with pyarrow.
"""

import csv
import dataclasses
import datetime
import logging
from pathlib import Path

import numpy as np

from ..core.errors import InputError

log = logging.getLogger("mixlib")

TEXT_SUFFIXES = (".csv", ".tsv", ".data", ".txt")
ROLES = ("user", "item", "rating")
OPTIONAL_ROLES = ("time",)  # columns read when a file has them (--time-col names it)
# Header names recognised without --user-col / --item-col / --rating-col / --time-col (compared in lower case).
COMMON_NAMES = {"user": ("user", "userid", "user_id"),
                "item": ("item", "itemid", "item_id", "movieid", "movie_id"),
                "rating": ("rating",),
                "time": ("timestamp", "time", "datetime", "date", "ts")}
TIME_POSITION = len(ROLES)  # the time column of a file without a header: the 4th (MovieLens u.data)
TIME_FORMS = ("seconds since 1970-01-01 UTC, or an ISO date or date and time such as 2024-05-01T10:00:00 (UTC unless "
              "it has an offset)")
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
    times : ndarray (N,) float64 or None, seconds since 1970-01-01 UTC of each rating; None when the file had no
        time column
    """

    users: np.ndarray
    items: np.ndarray
    values: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray
    times: np.ndarray | None = None

    @property
    def shape(self):
        """(users, items, ratings)."""
        return len(self.user_ids), len(self.item_ids), len(self.values)

    def subset(self, keep):
        """The ratings where ``keep (N,)`` is true, with the same id maps."""
        times = None if self.times is None else self.times[keep]
        return Ratings(self.users[keep], self.items[keep], self.values[keep], self.user_ids, self.item_ids, times)

    def reindexed(self):
        """The same ratings with ids that no longer have a rating dropped from the maps."""
        users, user_index = np.unique(self.users, return_inverse=True)
        items, item_index = np.unique(self.items, return_inverse=True)
        return Ratings(user_index.ravel(), item_index.ravel(), self.values, self.user_ids[users],
                       self.item_ids[items], self.times)


# -------------------------------------------------------------------------------------------- reading

def read_ratings(path, drop_invalid=False, names=None, values_optional=False):
    """Read ratings from ``.npy`` (an (N, 3) numeric array, never unpickled), delimited text or Parquet.

    Text files may have a header; the delimiter is detected; the columns are user, item, rating and
    optionally more, which are ignored but for a time column. Ids may be integers or strings. A file whose suffix
    is not known is read by what its content is.

    The time column is the one named by ``names["time"]``, else one with a common time name
    (:data:`COMMON_NAMES`); a text file without a header has it 4th (MovieLens u.data), an (N, 4) ``.npy`` array
    last. Its values are seconds since 1970-01-01 UTC (numbers) or ISO dates and dates with times (UTC unless they
    carry an offset); Parquet timestamps and dates are converted. A time column found without ``names`` in which
    no value is a time is not one: it is ignored, with a warning.

    Parameters
    ----------
    path : str or Path
    drop_invalid : bool
        Rows with a missing id, a missing or non-finite rating, or (when the file has times) a missing or
        unreadable time, are an InputError naming their count and the first one, unless ``drop_invalid``, which
        skips and counts them.
    names : dict or None
        ``{"user": ..., "item": ..., "rating": ..., "time": ...}``: header names of the columns (any case); a role
        left out or ``""`` takes a common name (:data:`COMMON_NAMES`), else its position (text only; the time
        column is found by its name only in a header).
    values_optional : bool
        Accept a file without a rating column (only user and item columns, and perhaps a time) for implicit
        feedback: every value is 1. A rating column that ``names`` gives must still be there.

    Of repeated (user, item) pairs the last one wins, and their count is logged.
    """
    path = Path(path)
    users, items, values, times = read_columns(path, drop_invalid, names, values_optional)
    return _indexed(path, users, items, values, times)


def read_columns(path, drop_invalid=False, names=None, values_optional=False):
    """The valid rows of one ratings file as columns, in file order (:func:`read_ratings` without the id maps and
    the repeated pairs; the same checks, messages and ``drop_invalid``).

    Returns
    -------
    users, items : ndarray (N,) int64 or str, the ids
    values : ndarray (N,) float64 (ones for a file without a rating column, with ``values_optional``)
    times : ndarray (N,) float64 or None
    """
    path = _existing_file(path, "ratings file")
    names = _given(names)
    kind = _kind(path, columns=2 if values_optional else 3)
    if names and kind == "npy":
        raise InputError(f"ratings file {path}: a .npy array has no column names (--{next(iter(names))}-col); its "
                         "columns are user, item, rating in that order (and a time 4th)")
    reader = {"npy": _read_npy, "text": _read_text, "parquet": _read_parquet}[kind]
    users, items, values, times, first_row = reader(path, names, values_optional)
    if values is None:
        log.info("ratings file %s has no rating column: every (user, item) pair is read as 1.0", path)
        values = np.ones(len(users))
    return _valid_rows(f"ratings file {path}", users, items, values, times, first_row, drop_invalid)


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


def _kind(path, columns):
    """'npy', 'parquet' or 'text' by the suffix, else by the content (text of at least ``columns`` columns);
    InputError when neither tells."""
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
    problem = _not_delimited(head, columns)
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
        return f"rows of {fields} field(s), not {', '.join(ROLES[:columns])}"
    if not any(_is_number(field) for row in rows[1:] or rows for field in row):
        return "no numbers in its rows"
    return ""


def _read_npy(path, names, values_optional):
    """The columns of an (N, 3) array (user, item, rating), (N, 2) when values are optional; a 4th is the time."""
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise InputError(f"ratings file {path} is not a plain numeric .npy array ({e})") from None
    return (*_array_columns(f"ratings file {path}", array, values_optional), 0)


def _array_columns(where, array, values_optional):
    """``(users, items, values or None, times or None)`` of a numeric array (N, 3): user, item, rating, or (N, 2)
    when values are optional; a 4th column is the time."""
    least = 2 if values_optional else 3
    if array.ndim != 2 or array.shape[1] < least or not np.issubdtype(array.dtype, np.number):
        expected = ("(N, 2) or more numbers: user, item[, rating]" if values_optional
                    else "(N, 3) numbers: user, item, rating")
        raise InputError(f"{where} holds a {array.dtype} array of shape {array.shape}; expected {expected}")
    users, items = (_as_ids(column) for column in (array[:, 0], array[:, 1]))
    values = array[:, 2].astype(np.float64) if array.shape[1] > 2 else None
    times = None
    if array.shape[1] > TIME_POSITION:
        times = _found_times(where, "4", array[:, TIME_POSITION].astype(np.float64), given=False)
    return users, items, values, times


def table_columns(table, names=None, values_optional=False, drop_invalid=False):
    """The valid rows of a ratings table in memory as columns, as :func:`read_columns` reads a file's (the same
    column names, checks and messages).

    Parameters
    ----------
    table : pandas.DataFrame, pyarrow.Table, dict of columns, numpy structured array (columns found by name, as in a
        Parquet file), or numeric ndarray (N, 3): user, item, rating ((N, 2) with ``values_optional``; a 4th column
        is the time)
    names, values_optional, drop_invalid : as :func:`read_ratings`

    Returns
    -------
    users, items : ndarray (N,) int64 or str
    values : ndarray (N,) float64
    times : ndarray (N,) float64 or None
    """
    where = "the ratings table"
    names = _given(names)
    if isinstance(table, np.ndarray) and table.dtype.names is None:
        users, items, values, times = _array_columns(where, table, values_optional)
    else:
        arrow = _as_arrow(table)
        columns = _arrow_roles(where, arrow.column_names, names, values_optional)
        users, items, values, times = _arrow_columns(where, arrow, columns, names)
    if values is None:
        values = np.ones(len(users))
    return _valid_rows(where, users, items, values, times, 0, drop_invalid)


def _as_arrow(table):
    """A ``pyarrow.Table`` of a pandas DataFrame, a pyarrow Table, a dict of columns or a numpy structured array."""
    import pyarrow as pa

    if isinstance(table, pa.Table):
        return table
    if hasattr(table, "to_numpy") and hasattr(table, "columns"):  # pandas (and DataFrames like it)
        return pa.Table.from_pandas(table, preserve_index=False)
    if isinstance(table, np.ndarray):
        return pa.table({name: table[name] for name in table.dtype.names})
    if isinstance(table, dict):
        return pa.table({name: np.asarray(column) for name, column in table.items()})
    raise InputError(f"a ratings table is a pandas DataFrame, a pyarrow Table, a dict of columns or a numpy array, "
                     f"not {type(table).__name__}")


def _read_parquet(path, names, values_optional):
    """The user, item, rating and time columns of a Parquet file, found by name (nulls become invalid rows).

    The rating column may be absent when ``values_optional`` (its values are then None), the time column always.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    where = f"ratings file {path}"
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as e:
        raise InputError(f"{where} is not a readable Parquet file ({e})") from None
    columns = _arrow_roles(where, schema.names, names, values_optional)
    try:
        table = pq.read_table(path, columns=list(columns.values()))
    except (pa.ArrowException, OSError) as e:
        raise InputError(f"{where} is not a readable Parquet file ({e})") from None
    return (*_arrow_columns(where, table, columns, names), 0)


def _arrow_roles(where, column_names, names, values_optional):
    """``{role: column name}`` of the user, item, rating and time columns among a table's ``column_names``, found
    by name (any case); InputError for a required one missing. The rating column may be absent when
    ``values_optional``, the time column always."""
    fields = [name.lower() for name in column_names]
    found = _named_columns(fields, ROLES, names)
    found["time"] = _time_column(fields, found, names)
    required = ("user", "item") if values_optional else ROLES
    missing = [role for role in found if found[role] is None and (role in names or role in required)]
    if missing:
        raise InputError(f"{where} has no {_wanted(missing, names)} column (it has "
                         f"{', '.join(column_names)}); name it with {_flags(missing)}")
    return {role: column_names[n] for role, n in found.items() if n is not None}


def _arrow_columns(where, table, columns, names):
    """``(users, items, values or None, times or None)`` of a ``pyarrow.Table`` whose roles are ``columns``
    (:func:`_arrow_roles`)."""
    import pyarrow as pa

    users, items = (_parquet_ids(table.column(columns[role])) for role in ("user", "item"))
    values = times = None
    if "rating" in columns:
        rating = table.column(columns["rating"])
        if not (pa.types.is_integer(rating.type) or pa.types.is_floating(rating.type)):
            raise InputError(f"{where}: column {columns['rating']} holds {rating.type}, not numbers")
        values = rating.to_numpy(zero_copy_only=False).astype(np.float64)
    if "time" in columns:
        times = _parquet_times(where, columns["time"], table.column(columns["time"]), "time" in names)
    return users, items, values, times


def _parquet_times(where, name, column, given):
    """A Parquet time column ``(N,)`` as seconds since the epoch (NaN where null or unreadable), or None.

    Numbers are seconds; timestamps (any unit; stored in UTC) and dates are converted; strings are parsed as in
    text files. A column of another type is an InputError when ``given`` (its name came from the caller), else
    not a time column (None, with a warning), like a column that holds no time (:func:`_found_times`).
    """
    import pyarrow as pa

    kind = column.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        seconds = column.to_numpy(zero_copy_only=False).astype(np.float64)
    elif pa.types.is_timestamp(kind):
        ticks = {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}[kind.unit]
        seconds = column.cast(pa.int64()).to_numpy(zero_copy_only=False).astype(np.float64) / ticks
    elif pa.types.is_date32(kind):
        seconds = column.cast(pa.int32()).to_numpy(zero_copy_only=False).astype(np.float64) * 86400
    elif pa.types.is_date64(kind):
        seconds = column.cast(pa.int64()).to_numpy(zero_copy_only=False).astype(np.float64) / 1e3
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        seconds = _times_of_text(["" if v is None else v for v in column.to_pylist()])
    elif given:
        raise InputError(f"{where}: column {name} holds {kind}, not times ({TIME_FORMS})")
    else:
        log.warning("%s: column %s holds %s, not times; the ratings are read without times", where, name, kind)
        return None
    return _found_times(where, name, seconds, given)


def _time_column(fields, found, names):
    """Where the time column is among header ``fields`` (lower case), or None: the one named ``names["time"]``,
    else one with a common time name, among the columns no role of ``found`` (``{role: position}``) holds."""
    held = set(found.values())
    return _named_columns(["" if n in held else field for n, field in enumerate(fields)], ("time",), names)["time"]


def _found_times(where, column, seconds, given):
    """``seconds (N,)`` of a time column, or None when the column was not ``given`` by name and holds no time
    (every value NaN): a column found by a common name or by position that is something else (logged)."""
    if given or not len(seconds) or not np.isnan(seconds).all():
        return seconds
    log.warning("%s: column %s holds no times (%s); the ratings are read without times", where, column,
                TIME_FORMS)
    return None


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


def _read_text(path, names, values_optional):
    """The columns of a delimited text file: ids, ratings (None when optional and absent), times (or None)."""
    rows = _text_rows(path, "ratings file", columns=2 if values_optional else 3)
    optional = ("rating",) if values_optional else ()
    first_row, columns = _text_columns(path, "ratings file", rows, ROLES, names, optional, timed=True)
    body = rows[first_row:]
    present = [role for role in ROLES if columns[role] is not None]
    width = max(columns[role] for role in present) + 1
    short = next((i for i, row in enumerate(body) if len(row) < width), None)
    if short is not None:
        raise InputError(f"ratings file {path}, line {short + first_row + 1}: fewer than {width} columns "
                         f"({', '.join(present)})")
    users, items = (np.array([row[columns[role]].strip() for row in body], dtype=object) for role in ("user", "item"))
    values = times = None
    if columns["rating"] is not None:
        values = _numbers(np.array([row[columns["rating"]].strip() for row in body], dtype=object))
    if columns["time"] is not None:
        times = _text_times(path, rows, first_row, columns["time"], "time" in names)
    return _text_ids(users), _text_ids(items), values, times, first_row


def _text_times(path, rows, header, column, given):
    """Seconds ``(n,)`` in ``column`` of text ``rows`` below ``header`` lines (NaN where a row has none or one
    that is no time), or None for a column not ``given`` by name that holds no time (:func:`_found_times`)."""
    seconds = _times_of_text([row[column] if len(row) > column else "" for row in rows[header:]])
    label = rows[0][column].strip() if header else str(column + 1)
    return _found_times(f"ratings file {path}", label, seconds, given)


def _text_columns(path, what, rows, roles, names, optional=(), timed=False):
    """``(header lines (0 or 1), {role: column or None})`` of a text file of ``rows`` (lists of fields).

    The first row is a header when it holds a column name of ``roles`` (a given one or a common one,
    :data:`COMMON_NAMES`) or the given time column's name, or when its content says so
    (:func:`_header_by_content`). In a header, a role whose name is absent takes its position in ``roles`` if the
    header has a column there that no named column holds; a role of ``optional`` that gets no column is absent
    (None), any other is refused, as is a role whose given name is absent. A header that names no column is
    refused (it would be read by position, or as data). Without a header, every role takes its position, one of
    ``optional`` only when the first row reaches it.

    With ``timed``, the result also has ``"time"``: in a header the column named as a time (:func:`_time_column`),
    without one the column at :data:`TIME_POSITION` when the first row reaches it, else None.
    """
    first = rows[0] if rows else []
    fields = [field.strip().lower() for field in first]
    found = _named_columns(fields, roles, names)
    time = _time_column(fields, found, names) if timed else None
    if all(v is None for v in found.values()) and not ("time" in names and time is not None):
        return 0, _positions(path, what, rows, roles, names, optional, timed)
    taken = {n for n in (*found.values(), time) if n is not None}
    unplaced = [role for n, role in enumerate(roles) if found[role] is None and
                (role in names or n in taken or (role in optional and n >= len(first)))]
    missing = [role for role in unplaced if role in names or role not in optional]
    if timed and "time" in names and time is None:
        missing.append("time")
    if missing:
        raise InputError(f"{what} {path}: its header ({', '.join(first)}) has no {_wanted(missing, names)} "
                         f"column; name it with {_flags(missing)}")
    columns = {role: None if role in unplaced else n if found[role] is None else found[role]
               for n, role in enumerate(roles)}
    return 1, {**columns, "time": time} if timed else columns


def _positions(path, what, rows, roles, names, optional, timed):
    """The columns ``{role: column or None}`` of a text file whose first row names no column (see
    :func:`_text_columns`); InputError when that row is a header by its content, or when ``names`` are given."""
    first = rows[0] if rows else []
    shown = roles[:max(len(first), len(roles) - len(optional))]  # the roles the first row has fields for
    if _header_by_content(first, rows[1:1 + HEADER_EVIDENCE_ROWS], shown):
        raise InputError(_unknown_header(path, what, first, shown, names))
    if names:
        raise InputError(f"{what} {path} has no header line, so {_flags(list(names))} cannot name its "
                         "columns; add a header or leave the column names out (columns by position)")
    columns = {role: n if role not in optional or n < len(first) else None for n, role in enumerate(roles)}
    if timed:
        columns["time"] = TIME_POSITION if len(first) > TIME_POSITION else None
    return columns


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
            if columns > 1 and not any(mark in head for mark in ",\t;| "):
                raise InputError(f"{what} {path} has one column; give at least {columns} columns (user, item"
                                 f"{', rating' if columns > 2 else ''}), separated by commas or tabs") from None
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
    names = {role: name for role, name in _given(names).items() if role not in OPTIONAL_ROLES}  # never read here
    if path.suffix.lower() == ".parquet" or _starts_with(path, PARQUET_MAGIC):
        return _parquet_id_columns(path, what, roles, names)
    rows = _text_rows(path, what, len(roles))
    header, columns = _text_columns(path, what, rows, roles, names)
    positions = [columns[role] for role in roles]
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


def _times_of_text(texts):
    """Seconds since the epoch ``(n,)`` of time fields ``(n,)`` (:func:`_seconds`); NaN where there is none."""
    return parse_each(texts, _seconds, np.nan)


def _seconds(text):
    """Seconds since 1970-01-01 UTC of a number (taken as it is) or of an ISO date or date and time, UTC unless it
    carries an offset ("2024-05-01", "2024-05-01T10:00:00", "2024-05-01 10:00:00+02:00"); ValueError otherwise."""
    try:
        return float(text)
    except ValueError:
        return _utc_seconds(datetime.datetime.fromisoformat(text.strip()))


def _utc_seconds(moment):
    """Seconds since the epoch of a ``datetime.datetime``, read as UTC when it has no time zone."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


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


def _valid_rows(where, users, items, values, times, header_rows, drop_invalid):
    """The columns ``(N,)`` read (``times`` may be None) without their invalid rows, refused or dropped; ids as
    int64 or str."""
    invalid = ~np.isfinite(values) | _missing(users) | _missing(items)
    if times is not None:
        invalid |= ~np.isfinite(times)
    if invalid.any():
        first = int(np.flatnonzero(invalid)[0]) + header_rows + 1
        what = "id or rating" if times is None else "id, rating or time"
        if not drop_invalid:
            raise InputError(f"{where}: {int(invalid.sum())} row(s) with a missing or non-finite {what}, "
                             f"the first at row {first}; fix them or pass --drop-invalid to skip them")
        log.warning("%s: skipped %d invalid row(s), the first at row %d", where, invalid.sum(), first)
    users, items, values = (a[~invalid] for a in (users, items, values))
    if times is not None:
        times = times[~invalid].astype(np.float64)
    return _id_array(users), _id_array(items), values.astype(np.float64), times


def _id_array(ids):
    """Valid ids as int64 (whole numbers) or str."""
    if ids.dtype == np.float64:
        return ids.astype(np.int64)
    return ids.astype(str) if ids.dtype == object else ids


def _indexed(path, users, items, values, times):
    """:class:`Ratings` of valid columns ``(N,)``: ids mapped to contiguous indices, the last of each repeated
    (user, item) pair kept."""
    user_ids, user_index = np.unique(users, return_inverse=True)
    item_ids, item_index = np.unique(items, return_inverse=True)
    user_index, item_index = user_index.ravel(), item_index.ravel()
    last = _last_of_each_pair(user_index, item_index, len(item_ids))
    if len(last) < len(values):
        log.info("ratings file %s: %d repeated (user, item) pair(s); the last rating of each wins",
                 path, len(values) - len(last))
    ratings = Ratings(user_index[last], item_index[last], values[last], user_ids, item_ids,
                      None if times is None else times[last])
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
    sizes = [part_size(part, n_ratings, name) for part, name in ((validation, "validation"), (test, "test"))]
    if sum(sizes) >= n_ratings:
        raise InputError(f"validation ({sizes[0]}) and test ({sizes[1]}) ratings leave none of the {n_ratings} "
                         "to train on; ask for fewer")
    order = np.random.default_rng(seed).permutation(n_ratings)
    held_validation, held_test = order[:sizes[0]], order[sizes[0]:sizes[0] + sizes[1]]
    return np.sort(order[sum(sizes):]), np.sort(held_validation), np.sort(held_test)


def part_size(part, n, name):
    """How many of ``n`` ratings a part given as a count or a fraction (``name`` in messages) holds."""
    if isinstance(part, float) and 0 < part < 1:
        return int(round(part * n))
    if isinstance(part, int) and part >= 0:
        return part
    raise _not_a_part(part, name)


def _not_a_part(part, name):
    return InputError(f"{name} must be a count (a whole number >= 0) or a fraction in (0, 1), not {part!r}")


def split_by_time(users, times, validation, test, cutoff=None):
    """A split that holds out each user's latest interactions, as a nightly job is judged on tomorrow's data.

    Each user's interactions are ordered by time, ties by row number. Without ``cutoff``, the last ``t_u`` of user
    u's ``n_u`` interactions are the test ratings and the ``v_u`` before them the validation ratings. A part given
    as a count ``c`` holds out ``c`` per user (``test=1`` is leave-one-out), as a fraction ``f`` it holds out
    ``floor(f n_u + 1/2)`` (halves round up). Every user keeps at least one training interaction: where
    ``t_u + v_u >= n_u`` the validation part shrinks first, to ``max(n_u - 1 - t_u, 0)``, then the test part, to
    ``n_u - 1``.

    With ``cutoff``, the test ratings are every interaction at or after it, whatever ``test`` says (a user without
    any interaction before the cutoff has all of theirs in test), and the validation ratings are the last ``v_u``
    of each user's ``n_u`` interactions before it, by the same rule with ``t_u = 0``.

    Parameters
    ----------
    users : ndarray (N,) int, user indices (>= 0)
    times : ndarray (N,) float, seconds since 1970-01-01 UTC (:attr:`Ratings.times`), or None
    validation, test : int >= 0 (a count per user) or float in (0, 1) (a fraction of each user's)
    cutoff : float or None, seconds since 1970-01-01 UTC (:func:`parse_time`)

    Returns
    -------
    train, validation, test : ndarray of row numbers, sorted

    Raises
    ------
    InputError
        Without times, with a time that is not finite, or when nothing is left to train on.
    """
    if times is None:
        raise InputError("split = 'time' needs a time column (timestamp, time, datetime, date or ts in a header, or "
                         "the 4th column of a file without one): name it with --time-col, or use split = 'random'")
    users, times = np.asarray(users), np.asarray(times, dtype=np.float64)
    if not np.isfinite(times).all():
        raise InputError(f"{int((~np.isfinite(times)).sum())} rating(s) without a finite time; the split by time "
                         "needs one for every rating")
    if cutoff is not None and not np.isfinite(cutoff):
        raise InputError(f"the cutoff must be a finite time, not {cutoff!r}")
    if cutoff is None:
        return latest_parts(users, times, validation, test)
    after = times >= cutoff
    before = np.flatnonzero(~after)
    if not len(before):
        raise InputError(f"no rating is before the cutoff ({_iso(cutoff)}), so none is left to train on; "
                         "choose a later cutoff")
    train, held_validation, _ = latest_parts(users[before], times[before], validation, 0)
    return before[train], before[held_validation], np.flatnonzero(after)


def latest_parts(users, times, validation, test):
    """``train, validation, test`` row numbers, sorted: each user's last ``t_u`` rows by ``(time, row)`` for test
    and the ``v_u`` before them for validation (:func:`split_by_time`, without a cutoff)."""
    if not len(users):
        raise InputError("no ratings to split, so none to train on")
    order, sorted_users, back, counts = _latest_first(users, times)
    held_test, held_validation = _per_user(test, counts, "test"), _per_user(validation, counts, "validation")
    most = np.maximum(counts - 1, 0)  # each user keeps one training interaction
    short = int(((held_test + held_validation > most) & (held_test + held_validation > 0)).sum())
    if short:
        log.info("split by time: %d user(s) have too few ratings for the parts asked; each keeps one to train on",
                 short)
    held_validation = np.minimum(held_validation, np.maximum(most - held_test, 0))
    held_test = np.minimum(held_test, most)
    test_back = held_test[sorted_users]  # at each sorted place, its user's t_u
    part = np.empty(len(users), dtype=np.int8)  # by row number: 0 train, 1 validation, 2 test
    part[order] = (back < test_back + held_validation[sorted_users]).astype(np.int8) + (back < test_back)
    return np.flatnonzero(part == 0), np.flatnonzero(part == 1), np.flatnonzero(part == 2)


def _latest_first(users, times):
    """``order, sorted_users, back, counts``: ``order (N,)`` sorts the rows by user, time and row number (lexsort
    is stable, so rows of equal user and time stay in row order); ``sorted_users (N,)`` is ``users[order]``;
    ``back (N,)`` is, at each sorted place, how many of that user's rows come after it (0 at each user's latest);
    ``counts (n_users,)`` is the number of rows of each user."""
    order = np.lexsort((times, users))
    sorted_users = users[order]
    counts = np.bincount(sorted_users)
    back = np.cumsum(counts)[sorted_users] - 1 - np.arange(len(order))
    return order, sorted_users, back, counts


def _per_user(part, counts, name):
    """How many of each user's ``counts (n_users,)`` interactions ``part`` holds out: a count ``c`` for every
    user, or a fraction ``f`` of each, ``floor(f n_u + 1/2)`` (``n_users,``) int64."""
    if isinstance(part, float) and 0 < part < 1:
        return np.floor(part * counts + 0.5).astype(np.int64)
    if isinstance(part, int) and part >= 0:
        return np.full(len(counts), part, dtype=np.int64)
    raise _not_a_part(part, name)


def parse_time(text):
    """Seconds since 1970-01-01 UTC of a time setting (a cutoff).

    Parameters
    ----------
    text : str, int, float, datetime.date or datetime.datetime
        A number of seconds, an ISO date or date and time (UTC unless it carries an offset: "2024-05-01",
        "2024-05-01T10:00:00", "2024-05-01 10:00:00+02:00"), or a date or datetime object (TOML's dates).

    Returns
    -------
    float

    Raises
    ------
    InputError
        When ``text`` is none of these, or not finite.
    """
    if isinstance(text, datetime.datetime):
        return _utc_seconds(text)
    if isinstance(text, datetime.date):
        return _utc_seconds(datetime.datetime(text.year, text.month, text.day))
    seconds = np.nan
    if isinstance(text, (str, int, float)) and not isinstance(text, bool):
        try:
            seconds = _seconds(str(text))
        except ValueError:
            pass
    if not np.isfinite(seconds):
        raise InputError(f"{text!r} is not a time: give {TIME_FORMS}")
    return seconds


def _iso(seconds):
    """``seconds`` since the epoch as an ISO date and time in UTC, for messages (as seconds out of its range)."""
    try:
        return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return f"{seconds:g} s"
