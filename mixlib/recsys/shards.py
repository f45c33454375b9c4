"""Kernels of the ratings' preprocessing on the workers, one part (an input file) or one shard at a time.

:mod:`mixlib.recsys.dataset` runs them as tasks (or in this process) in this order:

1. :func:`read_part` reads one file's valid rows (its raw ids); :func:`part_ids` and :func:`merge_ids` make the
   sorted id maps of all parts, a tree of unions; :func:`index_part` turns the ids into indices into them.
2. :func:`pieces_by_shard` cuts each part by shard, a contiguous range of users holding about the same number of
   ratings; :func:`build_shard` joins a shard's pieces from every part and keeps the last rating of each repeated
   (user, item) pair, "last" in input order (parts in order, rows in order: :data:`ORDER_BITS`). A shard is a dict
   of columns ``users``, ``items``, ``values``, ``order`` (and ``times``), sorted by (user, item).
3. The cold-start filter in rounds (:func:`filter_counts`, :func:`filtered`), then :func:`reindexed` to the ids
   that keep a rating.
4. The split: each rating's part, 0 train, 1 validation, 2 test (``part``, int8). A random split ranks the
   ratings by a seeded hash of their (user, item) pair (:func:`split_keys`): the ``n_v`` lowest keys are the
   validation ratings and the ``n_t`` next the test ratings, so the split depends on the seed and the ratings
   only, never on the parts or the shards; :func:`key_histogram` and :func:`keys_in_bins` find the two
   thresholds in two passes. A split by time (:func:`time_parts`) needs each user's ratings only, which one shard
   holds.

Every user's ratings are in one shard, so what is per user (counts, the split by time) needs no exchange; what
is per item (counts) adds up over the shards.
"""

import numpy as np

from ..core.arrays import run_lengths, run_starts, sorted_unique
from ..core.errors import InputError
from .ratings import latest_parts, read_columns

ORDER_BITS = 40  # a rating's place in the input: (part number << ORDER_BITS) + its row among the part's valid rows
KEY_BITS = 16  # the first pass of the split's threshold search counts keys by their KEY_BITS high bits
COLUMNS = ("users", "items", "values", "order", "times")


# -------------------------------------------------------------------------------------- reading parts

def read_part(path, number, names, implicit, drop_invalid):
    """The valid rows of the part ``number`` (a file) with their raw ids: a dict of columns ``users``, ``items``
    (ndarray (n,) int64 or str), ``values`` (n,) float64, ``order`` (n,) int64 and ``times`` ((n,) float64 or
    None); :func:`mixlib.recsys.ratings.read_columns` says what is valid. For ``implicit`` feedback the rating
    column may be absent (every value 1) and a negative value is an InputError."""
    users, items, values, times = read_columns(path, drop_invalid, names, values_optional=implicit)
    if implicit and (values < 0).any():
        raise InputError(f"ratings file {path}: implicit feedback needs values >= 0 (counts, ratings or 1), and "
                         f"{int((values < 0).sum())} are negative")
    order = (np.int64(number) << ORDER_BITS) + np.arange(len(values), dtype=np.int64)
    return {"users": users, "items": items, "values": values, "order": order, "times": times}


def part_ids(part):
    """The sorted distinct ids of a part: ``{"users": (u,), "items": (i,)}``."""
    return {"users": sorted_unique(part["users"]), "items": sorted_unique(part["items"])}


def merge_ids(pieces):
    """The union of :func:`part_ids` dicts, sorted; integer ids become strings when another part's are strings."""
    return {side: _union([piece[side] for piece in pieces]) for side in ("users", "items")}


def _union(arrays):
    if len({a.dtype.kind for a in arrays}) > 1:
        arrays = [a.astype(str) for a in arrays]
    return sorted_unique(np.concatenate(arrays))


def index_part(part, user_ids, item_ids):
    """The part with its ids replaced by their indices (int64) in the sorted ``user_ids`` and ``item_ids``, which
    hold every id of the part."""
    return {**part, "users": _positions(user_ids, part["users"]), "items": _positions(item_ids, part["items"])}


def _positions(known, ids):
    if known.dtype.kind != ids.dtype.kind:
        ids = ids.astype(str)  # integer ids of this part among string ids of others
    order = np.argsort(ids)  # searching in order reads ``known`` in order: faster than at random
    positions = np.empty(len(ids), dtype=np.int64)
    positions[order] = np.searchsorted(known, ids[order])
    return positions


def user_counts(part, n_users):
    """Ratings per user ``(n_users,)`` int64 in a part of indices (repeated pairs counted)."""
    return {"counts": np.bincount(part["users"], minlength=n_users)}


# ------------------------------------------------------------------------------------------ shards

def shard_bounds(counts, per_shard):
    """User bounds ``(s + 1,)`` of shards of about ``per_shard`` ratings each, whole users, from the ratings per
    user ``counts (n_users,)``: the same cut as :meth:`mixlib.recsys.als.BlockedRatings.scatter` makes of rows."""
    indptr = np.concatenate([[0], np.cumsum(counts)])
    return row_cuts(indptr, per_shard)


def row_cuts(indptr, per_block):
    """Bounds ``(b + 1,)`` of blocks of whole rows of about ``per_block`` entries, from CSR row pointers
    ``indptr (n_rows + 1,)``: ``ceil(nnz / per_block)`` blocks (at least one) cut where the entries are split
    evenly, empty blocks merged. It depends on the data only."""
    n_rows, nnz = len(indptr) - 1, int(indptr[-1])
    n_blocks = max(1, -(-nnz // per_block))
    cuts = np.searchsorted(indptr, np.linspace(0, nnz, n_blocks + 1)[1:-1])
    return np.unique(np.concatenate([[0], cuts, [n_rows]]))


def pieces_by_shard(part, bounds):
    """A part cut by shard: a list of ``len(bounds) - 1`` dicts of its columns, the rows of each shard's users in
    part order."""
    shard = np.searchsorted(bounds, part["users"], side="right") - 1
    order = np.argsort(shard, kind="stable")
    stops = np.searchsorted(shard[order], np.arange(1, len(bounds)))
    starts = np.concatenate([[0], stops[:-1]])
    return [_take(part, order[start:stop]) for start, stop in zip(starts, stops)]


def _take(columns, rows):
    return {name: None if values is None else values[rows] for name, values in columns.items()}


def build_shard(pieces):
    """A shard from its pieces of every part (in part order): one rating per (user, item) pair, the last in input
    order (largest ``order``), sorted by (user, item). ``repeated`` counts the ratings left out."""
    columns = {name: joined([p[name] for p in pieces]) for name in COLUMNS}
    users, items, order = columns["users"], columns["items"], columns["order"]
    ranked = np.lexsort((order, items, users))
    u, i = users[ranked], items[ranked]
    last = np.ones(len(ranked), dtype=bool)
    last[:-1] = (u[1:] != u[:-1]) | (i[1:] != i[:-1])
    shard = _take(columns, ranked[last])
    shard["repeated"] = int(len(ranked) - last.sum())
    return shard


def joined(arrays):
    """Arrays concatenated, or None when they are None (a column a dataset does not have)."""
    if arrays[0] is None:
        return None
    return np.concatenate(arrays)


# ------------------------------------------------------------------------------------ cold-start filter

def filter_counts(shard, n_items, min_entries):
    """What a round of the cold-start filter needs of a shard: its ratings per item ``(n_items,)`` and how many of
    its ratings are of users with ``min_entries`` or fewer (each user's ratings are all in the shard)."""
    per_user = run_lengths(shard["users"])
    return {"items": np.bincount(shard["items"], minlength=n_items),
            "short_user_ratings": int(per_user[per_user <= min_entries].sum())}


def filtered(shard, item_counts, min_entries):
    """The shard without the ratings of users or items with ``min_entries`` ratings or fewer (items counted over
    every shard: ``item_counts (n_items,)``)."""
    per_user = run_lengths(shard["users"])
    keep = (np.repeat(per_user, per_user) > min_entries) & (item_counts[shard["items"]] > min_entries)
    return {**_take(_columns(shard), keep), "repeated": shard["repeated"]}


def _columns(shard):
    return {name: shard[name] for name in COLUMNS}


def shard_users(shard):
    """The distinct users ``(u,)`` of a shard, sorted."""
    return shard["users"][run_starts(shard["users"])]


def reindexed(shard, user_map, item_map):
    """The shard with its indices mapped by ``user_map (old n_users,)`` and ``item_map (old n_items,)`` (both
    increasing over the ids that keep a rating, so the order stays)."""
    return {**shard, "users": user_map[shard["users"]], "items": item_map[shard["items"]]}


# ------------------------------------------------------------------------------------------ the split

def split_keys(users, items, n_items, seed):
    """A seeded hash ``(n,)`` uint64 of each (user, item) pair: SplitMix64's finaliser of the pair's number
    ``user * n_items + item`` plus a seeded offset, a bijection of 64-bit numbers, so distinct pairs never tie."""
    offset = _mix(np.array([seed], dtype=np.uint64))[0]
    pair = users.astype(np.uint64) * np.uint64(n_items) + items.astype(np.uint64)
    return _mix(pair + offset)


def _mix(z):
    """SplitMix64's output function, elementwise on uint64 (wrapping arithmetic)."""
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def key_histogram(shard, n_items, seed):
    """How many of a shard's keys have each value of their :data:`KEY_BITS` high bits: ``(2^KEY_BITS,)``."""
    keys = split_keys(shard["users"], shard["items"], n_items, seed)
    return {"bins": np.bincount((keys >> np.uint64(64 - KEY_BITS)).astype(np.int64), minlength=1 << KEY_BITS)}


def keys_in_bins(shard, n_items, seed, bins):
    """A shard's keys ``(m,)`` whose high bits are among ``bins``."""
    keys = split_keys(shard["users"], shard["items"], n_items, seed)
    return keys[np.isin((keys >> np.uint64(64 - KEY_BITS)).astype(np.int64), bins)]


def bins_of_ranks(histogram, ranks):
    """The bin ``(r,)`` of the key of each rank (1-based) in ``ranks``, and that key's rank within its bin."""
    ends = np.cumsum(histogram)
    bins = np.searchsorted(ends, ranks)  # the first bin whose cumulative count reaches the rank
    return bins, ranks - np.where(bins > 0, ends[np.maximum(bins - 1, 0)], 0)


def random_parts(shard, n_items, seed, thresholds):
    """Each rating's part ``(n,)`` int8 by its key: validation up to the first threshold, test up to the second
    (inclusive; None: no rating), train above."""
    keys = split_keys(shard["users"], shard["items"], n_items, seed)
    part = np.zeros(len(keys), dtype=np.int8)
    low, high = thresholds
    if high is not None:
        part[keys <= high] = 2
    if low is not None:
        part[keys <= low] = 1
    return part


def time_parts(shard, validation, test, cutoff):
    """Each rating's part ``(n,)`` int8 split by time (:func:`mixlib.recsys.ratings.split_by_time`, whose ties in
    time go by input order: ``order``)."""
    part = np.zeros(len(shard["users"]), dtype=np.int8)
    if not len(part):
        return part
    by_input = np.lexsort((shard["order"], shard["users"]))  # each user's ratings in input order
    users = shard["users"][by_input] - shard["users"][by_input[0]]  # from 0: the shard's own users
    times = shard["times"][by_input]
    if cutoff is None:
        _, held_validation, held_test = latest_parts(users, times, validation, test)
    else:
        after = times >= cutoff
        before = np.flatnonzero(~after)
        held_validation, held_test = np.zeros(0, np.int64), np.flatnonzero(after)
        if len(before):
            held_validation = before[latest_parts(users[before], times[before], validation, 0)[1]]
    part[by_input[held_validation]] = 1
    part[by_input[held_test]] = 2
    return part


def with_parts(shard, part):
    """The shard with each rating's part ``(n,)`` int8."""
    return {**shard, "part": part}


def has_times(part):
    """Whether a part or a shard has a time column."""
    return part["times"] is not None


def size(shard):
    """Ratings in a shard."""
    return len(shard["users"])


def repeated(shard):
    """Ratings of a shard's input left out as repeated pairs (:func:`build_shard`)."""
    return shard["repeated"]


def part_counts(shard):
    """Ratings in each part: ``{"parts": (3,) int64}`` (train, validation, test)."""
    return {"parts": np.bincount(shard["part"], minlength=3)}


# ----------------------------------------------------------------------------------------- training blocks

def user_range(shard):
    """``(first user, last user + 1)`` of a shard, or None when it is empty."""
    users = shard["users"]
    return (int(users[0]), int(users[-1]) + 1) if len(users) else None


def _training(shard, parts):
    """Row numbers of a shard's ratings in ``parts`` (0 train, 1 validation, 2 test)."""
    return np.flatnonzero(np.isin(shard["part"], parts))


def training_means(shard, start, stop, parts, shift):
    """Each user's mean value over the ratings in ``parts``: ``(stop - start,)``, 0 for a user without any, or
    zeros when not ``shift``."""
    means = np.zeros(stop - start)
    if not shift:
        return means
    rows = _training(shard, parts)
    users = shard["users"][rows] - start
    totals = np.bincount(users, weights=shard["values"][rows], minlength=stop - start)
    counts = np.bincount(users, minlength=stop - start)
    return np.divide(totals, counts, out=means, where=counts > 0)


def user_block(shard, start, stop, parts, shift, held=None):
    """The CSR block ``(indptr (stop - start + 1,), indices (nnz,), values (nnz,))`` of the users ``start`` to
    ``stop`` of a shard: their ratings in ``parts`` (in ``held`` when given: the held-out ones), each less its
    user's mean over ``parts`` (:func:`training_means`)."""
    rows = _training(shard, parts if held is None else held)
    users = shard["users"][rows] - start
    values = shard["values"][rows] - training_means(shard, start, stop, parts, shift)[users]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(users, minlength=stop - start))])
    return indptr, shard["items"][rows], values


def block_total(block):
    """The sum of a CSR block's values."""
    return float(block[2].sum())


def value_range(shard, parts=None):
    """The lowest and highest value ``(2,)`` of a shard's ratings in ``parts`` (every one with None; NaN when it
    has none)."""
    values = shard["values"] if parts is None else shard["values"][_training(shard, parts)]
    return np.array([values.min(), values.max()]) if len(values) else np.full(2, np.nan)


def block_row_counts(block):
    """Entries per row ``(n_rows,)`` of a CSR block."""
    return np.diff(block[0])


def block_column_counts(block, n_columns):
    """``{"counts": (n_columns,)}``: entries per column of a CSR block."""
    return {"counts": np.bincount(block[1], minlength=n_columns)}


def transposed_pieces(block, start, bounds):
    """A CSR block of rows ``start, ...`` cut by the column ranges ``bounds (b + 1,)``: for each range, the
    ``(columns, rows, values)`` of its entries, by column and then row."""
    rows = np.repeat(np.arange(start, start + len(block[0]) - 1), np.diff(block[0]))
    columns, values = block[1], block[2]
    order = np.argsort(columns, kind="stable")  # rows stay ascending within a column
    cuts = np.searchsorted(columns[order], bounds)
    return [(columns[order[a:b]], rows[order[a:b]], values[order[a:b]]) for a, b in zip(cuts[:-1], cuts[1:])]


def transposed_block(pieces, start, stop):
    """The CSR block of the transpose's rows ``start`` to ``stop`` from their pieces (:func:`transposed_pieces`)
    of consecutive row blocks: ``(indptr, indices, values)``, each row's entries in the original row order."""
    columns = np.concatenate([p[0] for p in pieces])
    order = np.argsort(columns, kind="stable")
    indptr = np.concatenate([[0], np.cumsum(np.bincount(columns - start, minlength=stop - start))])
    return indptr, np.concatenate([p[1] for p in pieces])[order], np.concatenate([p[2] for p in pieces])[order]


def row_range(block, start, stop):
    """The rows ``start`` to ``stop`` of a CSR block ``(indptr, indices, values)``, as a CSR block of their own
    (copies: the block they come from can be let go)."""
    indptr, indices, values = block
    first, last = indptr[start], indptr[stop]
    return indptr[start:stop + 1] - first, indices[first:last].copy(), values[first:last].copy()


# -------------------------------------------------------------------------------------------- judging

def content_digest(shard):
    """``{"digest": (2,) uint64}``: two sums (mod 2^64) of a seeded 64-bit hash of each rating's user, item,
    value, part (and time): what a checkpoint checks the ratings by. A sum does not depend on how the ratings are
    cut into shards, so the shards' digests add up to the same digest whatever ``block_ratings`` is."""
    columns = [shard["users"], shard["items"], shard["values"], shard["part"]]
    if shard.get("times") is not None:
        columns.append(shard["times"])
    digest = np.zeros(2, dtype=np.uint64)
    for seed in range(2):
        mixed = np.full(len(shard["users"]), seed, dtype=np.uint64)
        for column in columns:
            bits = column.astype(np.int64).view(np.uint64) if column.dtype.kind in "iub" else column.view(np.uint64)
            mixed = _mix(mixed ^ bits)
        digest[seed] = mixed.sum(dtype=np.uint64)
    return {"digest": digest}


def residual_sums(shard, start, users, items, clip):
    """``{"squares", "absolute", "count"}``, each ``(3,)`` by part (train, validation, test): the sums of the
    squared and absolute residuals ``r_ui - prediction`` of a model (a :class:`mixlib.recsys.store.Model` in this
    run's indices, cut by :meth:`~mixlib.recsys.store.Model.split_users`: ``items``, and ``users`` the rows of
    the shard's users from ``start``; :meth:`~mixlib.recsys.store.Model.predict_indices`, clipped when ``clip``)
    and the ratings counted."""
    model = items.with_users(users)
    residual = shard["values"] - model.predict_indices(shard["users"] - start, shard["items"], clip)
    part = shard["part"]
    return {"squares": np.bincount(part, residual ** 2, 3), "absolute": np.bincount(part, np.abs(residual), 3),
            "count": np.bincount(part, minlength=3)}


def baseline_sweep(shard, start, stop, previous, item_bias, mu, reg_user, n_items):
    """One sweep of the bias-only baseline (:func:`mixlib.recsys.als.fit_baseline`) over a shard's training
    ratings: its users' biases ``b_u = sum_i (r_ui - mu - b_i) / (reg_user + |R(u)|)`` from ``item_bias
    (n_items,)``, then the sums ``sum_u (r_ui - mu - b_u)`` of each item that the next item biases are made of
    (with the items' counts of training ratings, :func:`training_item_counts`).

    Parameters
    ----------
    shard : dict; start, stop : int, its users
    previous : dict or None, this shard's last sweep (None for the first, whose user biases are zeros)
    item_bias : ndarray (n_items,) or None (the first sweep); mu : float; reg_user : float; n_items : int

    Returns
    -------
    dict: 'user_bias' (stop - start,), 'items' (n_items,) the item sums, 'moved' the largest change of a user
    bias
    """
    from .compiled import baseline_sweep_rows

    first = item_bias is None
    user_bias, item_sums = baseline_sweep_rows(shard["users"], shard["items"], shard["values"], shard["part"], start,
                                               np.zeros(0) if first else item_bias, first, mu, reg_user,
                                               stop - start, n_items)
    moved = 0.0 if previous is None else float(np.abs(user_bias - previous["user_bias"]).max(initial=0))
    return {"user_bias": user_bias, "moved": moved, "items": item_sums}


def training_total(shard):
    """``{"total", "count"}`` of a shard's training values."""
    values = shard["values"][_training(shard, (0,))]
    return {"total": float(values.sum()), "count": len(values)}


def baseline_residuals(shard, start, sweep, item_bias, mu, value_range):
    """``{"squares", "count"}`` of the baseline ``mu + b_u + b_i`` on a shard's validation ratings, the users'
    biases from its last ``sweep`` (:func:`baseline_sweep`), predictions clipped to ``value_range`` (or None)."""
    rows = _training(shard, (1,))
    predicted = mu + sweep["user_bias"][shard["users"][rows] - start] + item_bias[shard["items"][rows]]
    if value_range is not None:
        predicted = np.clip(predicted, *value_range)
    return {"squares": float(((shard["values"][rows] - predicted) ** 2).sum()), "count": len(rows)}


# ---------------------------------------------------------------------------------- the model's pattern

def user_rating_counts(shard, start, stop):
    """Ratings ``(stop - start,)`` of each of the users ``start`` to ``stop`` in a shard (every part)."""
    return np.bincount(shard["users"] - start, minlength=stop - start)


def shard_items(shard):
    """The items ``(n,)`` of a shard's ratings, by user and then item: its piece of the CSR indices."""
    return shard["items"]


def write_pattern_chunk(path, first, last, offset, *pieces):
    """Write the entries ``first`` to ``last`` of the CSR indices, which the consecutive shard ``pieces``
    (:func:`shard_items`) hold from the entry ``offset`` on, into the Zarr array at ``path`` (created by the
    caller; ``first`` and ``last`` bound whole chunks of it, so no other task writes them)."""
    import zarr

    from ..core.storage import zarr_store

    try:
        array = zarr.open_array(zarr_store(path), mode="r+")
    except FileNotFoundError:
        raise InputError(f"a worker cannot open {path}: the model directory must be a folder the workers share "
                         "(or a URL) when they read the ratings") from None
    values = np.concatenate(pieces)[first - offset:last - offset]
    array[first:last] = values
    return len(values)


# ------------------------------------------------------------------------------------------- ranking

def _relevant_rows(shard, part, threshold):
    """Row numbers of a shard's ratings in ``part`` whose value reaches ``threshold``."""
    return np.flatnonzero((shard["part"] == part) & (shard["values"] >= threshold))


def latest_time(shard):
    """The time of a shard's latest rating (-inf without any)."""
    return float(shard["times"].max(initial=-np.inf))


def relevant_counts(shard, threshold):
    """``{"held": (2,), "relevant": (2,)}``: a shard's validation and test ratings, and those reaching
    ``threshold``."""
    held = np.bincount(shard["part"], minlength=3)[1:]
    relevant = np.bincount(shard["part"][shard["values"] >= threshold], minlength=3)[1:]
    return {"held": held, "relevant": relevant}


def relevant_users(shard, part, threshold):
    """The users ``(m,)``, ascending, with a rating in ``part`` that reaches ``threshold``."""
    return np.unique(shard["users"][_relevant_rows(shard, part, threshold)])


def _pattern_of(users, items, ranked):
    """The CSR ``(indptr (len(ranked) + 1,), indices)`` of pairs ``(users, items)`` (sorted by user) over the
    users ``ranked`` (ascending)."""
    at = np.searchsorted(ranked, users)
    return np.concatenate([[0], np.cumsum(np.bincount(at, minlength=len(ranked)))]), items


def ranking_lists(shard, part, threshold, chosen=None):
    """What ranks a shard's users: ``(ranked (b,), exclude, relevant)``, the users with a rating in ``part`` that
    reaches ``threshold`` (among ``chosen``, ascending, when given), the CSR of their training items (not
    ranked) and of those relevant items."""
    rows = _relevant_rows(shard, part, threshold)
    if chosen is not None:
        rows = rows[np.isin(shard["users"][rows], chosen)]
    return _lists_of_rows(shard, rows)


def _lists_of_rows(shard, rows):
    """:func:`ranking_lists` of the relevant ratings ``rows`` of a shard."""
    ranked = np.unique(shard["users"][rows])
    train = np.flatnonzero((shard["part"] == 0) & np.isin(shard["users"], ranked))
    exclude = _pattern_of(shard["users"][train], shard["items"][train], ranked)
    return ranked, exclude, _pattern_of(shard["users"][rows], shard["items"][rows], ranked)


def ranking_sums_of(ranked, exclude, relevant, scorer, top, block_users):
    """The summed ranking metrics (:func:`mixlib.recsys.ranking.ranking_sums`) of the users ``ranked`` with their
    ``exclude`` and ``relevant`` CSRs, ``block_users`` at a time (zeros without users); ``scorer`` is
    ``(user_factors (n_users, k), item_factors (n_items, k), item_bias (n_items,))``, rows by index."""
    from ..core.reduce import add_stats
    from .ranking import METRICS, ranking_sums
    from .store import rows_of

    user_factors, item_factors, item_bias = scorer
    sums = [{"users": 0, **{name: 0.0 for name in METRICS}, "listed": np.zeros(len(item_factors), np.int64)}]
    for first in range(0, len(ranked), block_users):
        block = np.arange(first, min(first + block_users, len(ranked)))
        sums.append(ranking_sums(user_factors[ranked[block]], rows_of(*exclude, block), rows_of(*relevant, block),
                                 item_factors, item_bias, top))
    return add_stats(sums)


def shard_ranking(shard, scorer, part, threshold, top, block_users):
    """The summed ranking metrics of a shard's users with a relevant rating in ``part`` (:func:`ranking_lists`,
    :func:`ranking_sums_of`)."""
    return ranking_sums_of(*ranking_lists(shard, part, threshold), scorer, top, block_users)


def training_item_counts(shard, n_items):
    """``{"counts": (n_items,)}``: a shard's training ratings of each item."""
    return {"counts": np.bincount(shard["items"][shard["part"] == 0], minlength=n_items)}


# ---------------------------------------------------------------------- against the published model

def published_pairs(shard, published, user_map, item_map, threshold, ranking):
    """A shard's validation ratings that the ``published`` model (a :class:`mixlib.recsys.store.Model`) never
    saw, as row numbers, with their user and item indices in it (``user_map (n_users,)``, ``item_map
    (n_items,)``: -1 for an id it does not know); for a ``ranking`` comparison, only the relevant ones (value at
    least ``threshold``) of users and items it knows."""
    rows = _relevant_rows(shard, 1, threshold if ranking else -np.inf)
    users, items = user_map[shard["users"][rows]], item_map[shard["items"][rows]]
    kept = ~published.has_seen(users, items)
    if ranking:
        kept &= (users >= 0) & (items >= 0)
    return rows[kept], users[kept], items[kept]


def published_comparison(shard, new, published, user_map, item_map, threshold, clip, ranking, top, block_users):
    """Sums that compare the ``new`` model with the ``published`` one on a shard's validation ratings that the
    published one never saw (:func:`published_pairs`): their ``count``, and the squared residuals of both
    (``new_squares``, ``published_squares``) or, for a ``ranking`` comparison, both models' ranking sums prefixed
    ``new_`` and ``published_``, each model ranking every item outside its own input for each user."""
    rows, users, items = published_pairs(shard, published, user_map, item_map, threshold, ranking)
    out = {"count": len(rows)}
    if not ranking:
        values = shard["values"][rows]
        predicted = new.predict_indices(shard["users"][rows], shard["items"][rows], clip)
        out["new_squares"] = float(((values - predicted) ** 2).sum())
        out["published_squares"] = float(((values - published.predict_indices(users, items, clip)) ** 2).sum())
        return out
    ours = ranking_sums_of(*_lists_of_rows(shard, rows), new.ranking_arrays(), top, block_users)
    theirs = ranking_sums_of(*_published_lists(published, users, items), published.ranking_arrays(), top,
                             block_users)
    out.update({f"new_{key}": value for key, value in ours.items()})
    out.update({f"published_{key}": value for key, value in theirs.items()})
    return out


def _published_lists(published, users, items):
    """:func:`ranking_lists` of relevant pairs ``(users (m,), items (m,))`` in the ``published`` model's indices,
    each user's items in its input excluded."""
    from .store import rows_of

    ranked, position = np.unique(users, return_inverse=True)
    order = np.lexsort((items, position))
    relevant = _pattern_of(position[order], items[order], np.arange(len(ranked)))
    return ranked, rows_of(published.seen_indptr, published.seen_indices, ranked), relevant
