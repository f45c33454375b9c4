"""Ratings from one file or a dataset of files, read and prepared by the workers.

A dataset is a folder (searched recursively), a glob pattern or a single file: every file with a ratings suffix
(:data:`DATASET_SUFFIXES`) is a part, in the order of their paths; hidden files and those starting with ``_``
(Spark's ``_SUCCESS``) are left alone. Each part is read by one task, and the preprocessing of
:mod:`mixlib.recsys.shards` runs as tasks over the parts and then over shards of users, so that the job's process
holds the id maps and counts per user and per item, never the ratings themselves. Without a client the same
kernels run in this process, one after another, which gives the same ratings, split and model.
"""

import dataclasses
import functools
import glob
import logging
import operator
import os
import uuid
from pathlib import Path

import numpy as np

from ..core.arrays import sorted_unique
from ..core.errors import InputError
from ..core.reduce import add_stats, local_tree, submit_tree
from . import shards
from .ratings import FORMATS, Ratings, _iso, part_size

log = logging.getLogger("mixlib")

DATASET_SUFFIXES = (".parquet", ".csv", ".tsv", ".data", ".txt", ".npy")
SHARD_RATINGS = 1 << 18  # ratings per shard of users (about); train makes it block_ratings
GLOB_MARKS = "*?["


def dataset_files(spec):
    """The files of a ratings input, in order, as absolute paths (a worker of a remote cluster runs in another
    folder): ``[spec]`` for a file, a folder's files (recursively) or a glob's matches with a ratings suffix.
    InputError when a folder or a glob holds none."""
    text = os.path.abspath(os.path.expanduser(str(spec)))
    if any(mark in str(spec) for mark in GLOB_MARKS):
        matches = [Path(m) for m in sorted(glob.glob(text, recursive=True))]
        return _ratings_files(matches, f"the pattern {spec}")
    path = Path(text)
    if path.is_dir():
        return _ratings_files(sorted(p for p in path.rglob("*") if not _hidden(p.relative_to(path))),
                              f"the folder {spec}")
    return [Path(spec)]  # one file, read in this process; its reader says what is wrong with it


def is_dataset(spec):
    """Whether a ratings input names several files (a folder or a glob pattern) rather than one."""
    text = str(spec)
    return any(mark in text for mark in GLOB_MARKS) or Path(text).is_dir()


def _hidden(relative):
    return any(part.startswith((".", "_")) for part in relative.parts)


def _ratings_files(paths, where):
    files = [p for p in paths if p.is_file()]
    chosen = [p for p in files if p.suffix.lower() in DATASET_SUFFIXES]
    others = len(files) - len(chosen)
    if not chosen:
        raise InputError(f"{where} holds no ratings file ({FORMATS})" + (f"; {others} other file(s)" if others
                                                                          else ""))
    if others:
        log.info("%s: %d file(s) without a ratings suffix left alone", where, others)
    empty = next((p for p in chosen if p.stat().st_size == 0), None)
    if empty is not None:
        raise InputError(f"ratings file {empty} is empty (0 bytes); remove it from {where}")
    return chosen


def identity(value):
    """Its argument: the task that holds a shared value (:meth:`Tasks.shared`), or the chunk of a tree whose
    blocks are statistics already."""
    return value


class Tasks:
    """Kernels over blocks as tasks on ``client`` (blocks are futures), or called in this process when ``client``
    is None (blocks are values): the same calls either way. Task keys start with ``name``."""

    def __init__(self, client, name="ratings"):
        self.client, self.name, self.run = client, name, uuid.uuid4().hex[:8]
        self.calls = 0

    def map(self, function, blocks, *args):
        """``function(block, *args)`` of every block."""
        if self.client is None:
            return [function(block, *args) for block in blocks]
        key = self._key(function)
        return [self.client.submit(function, block, *args, key=f"{key}-{i}", pure=False)
                for i, block in enumerate(blocks)]

    def call(self, function, *args):
        """``function(*args)`` as one task (called here without a client)."""
        if self.client is None:
            return function(*args)
        return self.client.submit(function, *args, key=f"{self._key(function)}-0", pure=False)

    def shared(self, value):
        """``value`` as the tasks take it: a future of a task that holds it (or the value itself, here). Not
        scattered: Dask computes a lost result again from its task, and the tasks that took ``value`` can run again
        after a lost worker only if it can (scattered data has no task)."""
        if self.client is None:
            return value
        import warnings

        with warnings.catch_warnings():  # sending the value once in a task is the point: a lost copy is rebuilt
            warnings.filterwarnings("ignore", message="Sending large graph")
            return self.client.submit(identity, value, key=f"{self._key(identity)}-0", pure=False)

    def tree(self, blocks, chunk, merge=add_stats):
        """The blocks' ``chunk`` statistics merged in the tree of :mod:`mixlib.core.reduce`, here."""
        return self.gather(self.tree_submitted(blocks, chunk, merge))

    def tree_submitted(self, blocks, chunk, merge=add_stats):
        """:meth:`tree` submitted, not waited for: the future of its merged statistics (the statistics here),
        which :meth:`gather` gives, with others at once."""
        if self.client is None:
            return local_tree(blocks, chunk, merge)
        return submit_tree(self.client, blocks, chunk, merge, name=self._key(chunk))

    def gather(self, blocks):
        return blocks if self.client is None else self.client.gather(blocks)

    def zip(self, function, *block_lists):
        """``function(a, b, ...)`` of the blocks of each list, taken in step."""
        if self.client is None:
            return [function(*blocks) for blocks in zip(*block_lists)]
        key = self._key(function)
        return [self.client.submit(function, *blocks, key=f"{key}-{i}", pure=False)
                for i, blocks in enumerate(zip(*block_lists))]

    def regroup(self, lists, n):
        """From blocks that are lists of ``n`` items, the ``n`` lists of every block's item ``j``."""
        if self.client is None:
            return [[items[j] for items in lists] for j in range(n)]
        key = self._key(operator.getitem)
        return [[self.client.submit(operator.getitem, items, j, key=f"{key}-{j}-{i}") for i, items in
                 enumerate(lists)] for j in range(n)]

    def _key(self, function):
        name = getattr(function, "func", function).__name__.strip("_").replace("_", "-")
        self.calls += 1
        return f"{self.name}-{name}-{self.run}-{self.calls}"


@dataclasses.dataclass
class PreparedRatings:
    """Ratings read and prepared on the workers (or here): shards of users with each rating's part.

    Attributes
    ----------
    shards : list of futures (or dicts): columns ``users``, ``items``, ``values``, ``order``, ``times``, ``part``
        (0 train, 1 validation, 2 test), each shard a range of users, sorted by (user, item)
    user_ids, item_ids : ndarray, the original ids of the indices, sorted
    tasks : Tasks, where the shards are
    part_counts : ndarray (3,) int64, the ratings in each part
    """

    shards: list
    user_ids: np.ndarray
    item_ids: np.ndarray
    tasks: Tasks
    part_counts: np.ndarray

    def spans(self):
        """``(shards, starts, stops)``: the shards holding ratings, and the users each one covers (every user
        from the first of a shard to the first of the next: a user without ratings falls in a span too)."""
        ranges = self.tasks.gather(self.tasks.map(shards.user_range, self.shards))
        filled = [(shard, r) for shard, r in zip(self.shards, ranges) if r is not None]
        starts = [r[0] for _, r in filled]
        return [shard for shard, _ in filled], starts, starts[1:] + [len(self.user_ids)]

    def gathered(self):
        """``(Ratings, {"train", "validation", "test": row numbers})`` in this process, rows in shard order."""
        shards_here = self.tasks.gather(self.shards)
        columns = {name: shards.joined([s[name] for s in shards_here]) for name in ("users", "items", "values", "times",
                                                                                "part")}
        ratings = Ratings(columns["users"], columns["items"], columns["values"], self.user_ids, self.item_ids,
                          columns["times"])
        part = columns["part"]
        return ratings, {name: np.flatnonzero(part == n) for n, name in enumerate(("train", "validation", "test"))}


def prepare_dataset(tasks, files, *, names=None, implicit=False, drop_invalid=False, **preparation):
    """Read the ``files`` (parts; :func:`mixlib.recsys.shards.read_part` says what ``names``, ``implicit`` and
    ``drop_invalid`` do) and prepare their ratings (:func:`prepare_parts`)."""
    numbered = [(path, number) for number, path in enumerate(files)]
    parts = tasks.map(_read_numbered, numbered, names, implicit, drop_invalid)
    where = f"ratings file {files[0]}" if len(files) == 1 else f"ratings of {len(files)} files ({files[0]}, ...)"
    return prepare_parts(tasks, parts, where, **preparation)


def _read_numbered(numbered, names, implicit, drop_invalid):
    """The ratings of one file of a dataset, ``numbered`` ``(path, part number)``
    (:func:`mixlib.recsys.shards.read_part`)."""
    path, number = numbered
    return shards.read_part(path, number, names, implicit, drop_invalid)


def prepare_parts(tasks, parts, where, *, min_entries, validation, test, seed, split_by="random", cutoff=None,
                  shard_ratings=SHARD_RATINGS):
    """The seed's preprocessing of the parts' ratings, part by part and shard by shard: id maps, repeated pairs,
    the cold-start filter (``min_entries``), the split (``split_by`` 'random', seeded, or 'time', with ``cutoff``;
    None: none, every rating in part 0).

    Parameters
    ----------
    tasks : Tasks
    parts : list of futures (or dicts) of :func:`mixlib.recsys.shards.read_part`
    where : str, names the ratings in messages
    validation, test : int (a count) or float in (0, 1) (a fraction): of all ratings (random) or of each user's
        (time; :func:`mixlib.recsys.ratings.split_by_time`)

    Returns
    -------
    PreparedRatings
    """
    timed = tasks.gather(tasks.map(shards.has_times, parts))
    if len(set(timed)) > 1:
        raise InputError(f"{where}: some files have a time column and others do not; give every file one, "
                         "or none")
    if split_by == "time" and not timed[0]:
        raise InputError("split = 'time' needs a time column (timestamp, time, datetime, date or ts in a header, or "
                         "the 4th column of a file without one): name it with --time-col, or use split = 'random'")
    ids = tasks.tree(parts, shards.part_ids, shards.merge_ids)
    user_ids, item_ids = ids["users"], ids["items"]
    indexed = tasks.map(shards.index_part, parts, tasks.shared(user_ids), tasks.shared(item_ids))
    del parts
    counts = tasks.tree(indexed, functools.partial(shards.user_counts, n_users=len(user_ids)))["counts"]
    if not counts.sum():
        raise InputError(f"{where} holds no rating to train on (only a header?)")
    bounds = shards.shard_bounds(counts, shard_ratings)
    cut = tasks.map(shards.pieces_by_shard, indexed, bounds)
    sharded = tasks.map(shards.build_shard, tasks.regroup(cut, len(bounds) - 1))
    del indexed, cut
    repeated = sum(tasks.gather(tasks.map(shards.repeated, sharded)))
    if repeated:
        log.info("%s: %d repeated (user, item) pair(s); the last rating of each wins", where, repeated)
    log.info("read %s: %d users, %d items, %d ratings", where, len(user_ids), len(item_ids),
             int(counts.sum()) - repeated)
    if min_entries:
        sharded, user_ids, item_ids = _cold_start(tasks, sharded, user_ids, item_ids, min_entries)
    n_ratings = _total(tasks, sharded)
    if split_by == "time":
        parts_of = tasks.map(shards.time_parts, sharded, validation, test, cutoff)
    elif split_by is None:  # no split: every rating is in part 0
        parts_of = tasks.map(shards.random_parts, sharded, len(item_ids), seed, (None, None))
    else:
        thresholds = _thresholds(tasks, sharded, n_ratings, len(item_ids), validation, test, seed)
        parts_of = tasks.map(shards.random_parts, sharded, len(item_ids), seed, thresholds)
    sharded = tasks.zip(shards.with_parts, sharded, parts_of)
    part_counts = tasks.tree(sharded, shards.part_counts)["parts"]
    if split_by is not None:
        _check_split(part_counts, split_by, cutoff)
    return PreparedRatings(sharded, user_ids, item_ids, tasks, part_counts)


def _total(tasks, sharded):
    """Ratings in all shards."""
    return int(sum(tasks.gather(tasks.map(shards.size, sharded))))


def _cold_start(tasks, sharded, user_ids, item_ids, min_entries):
    """The cold-start filter (:func:`mixlib.recsys.ratings.cold_start_filter`) in rounds over the shards, then the
    ids that keep a rating: ``(shards, user_ids, item_ids)``."""
    before = (len(user_ids), len(item_ids), _total(tasks, sharded))
    rounds, kept = 0, before[2]
    while True:
        stats = tasks.tree(sharded, functools.partial(shards.filter_counts, n_items=len(item_ids),
                                                      min_entries=min_entries))
        item_counts = stats["items"]
        if rounds:  # the counts of the ratings left by the last round
            log.info("cold-start filter round %d: %d ratings -> %d", rounds, kept, int(item_counts.sum()))
            kept = int(item_counts.sum())
        if not stats["short_user_ratings"] and not ((item_counts > 0) & (item_counts <= min_entries)).any():
            break
        rounds += 1
        sharded = tasks.map(shards.filtered, sharded, tasks.shared(item_counts), min_entries)
    users = sorted_unique(np.concatenate(tasks.gather(tasks.map(shards.shard_users, sharded)) or [np.zeros(0, int)]))
    items = np.flatnonzero(item_counts)
    user_map, item_map = _new_indices(users, len(user_ids)), _new_indices(items, len(item_ids))
    sharded = tasks.map(shards.reindexed, sharded, tasks.shared(user_map), tasks.shared(item_map))
    user_ids, item_ids = user_ids[users], item_ids[items]
    log.info("cold-start filter (min_entries %d): %d users x %d items, %d ratings -> %d x %d, %d", min_entries,
             *before, len(user_ids), len(item_ids), kept)
    if not kept:
        raise InputError(f"the cold-start filter (min_entries {min_entries}) removed every rating; lower "
                         "--min-entries")
    return sharded, user_ids, item_ids


def _new_indices(kept, n):
    """``(n,)`` int64: the new index of each old index in ``kept`` (sorted), -1 for the others."""
    new = np.full(n, -1, dtype=np.int64)
    new[kept] = np.arange(len(kept))
    return new


def _thresholds(tasks, sharded, n_ratings, n_items, validation, test, seed):
    """The highest keys ``(validation, test)`` of the random split's validation and test ratings (None: none), the
    ranks ``n_v`` and ``n_v + n_t`` among every rating's key (:func:`mixlib.recsys.shards.split_keys`)."""
    sizes = [part_size(part, n_ratings, name) for part, name in ((validation, "validation"), (test, "test"))]
    if sum(sizes) >= n_ratings:
        raise InputError(f"validation ({sizes[0]}) and test ({sizes[1]}) ratings leave none of the {n_ratings} "
                         "to train on; ask for fewer")
    ranks = np.array([sizes[0], sizes[0] + sizes[1]])
    wanted = ranks[ranks > 0]
    if not len(wanted):
        return None, None
    histogram = tasks.tree(sharded, functools.partial(shards.key_histogram, n_items=n_items, seed=seed))["bins"]
    bins, within = shards.bins_of_ranks(histogram, wanted)
    keys = np.sort(np.concatenate(tasks.gather(tasks.map(shards.keys_in_bins, sharded, n_items, seed,
                                                         np.unique(bins)))))
    firsts = np.searchsorted(keys, bins.astype(np.uint64) << np.uint64(64 - shards.KEY_BITS))  # each bin's
    found = dict(zip(wanted, keys[firsts + within - 1]))
    return tuple(found.get(rank) if rank > 0 else None for rank in ranks)


def _check_split(counts, split_by, cutoff):
    train, validation, test = (int(c) for c in counts)
    if not train and cutoff is not None:
        raise InputError(f"no rating is before the cutoff ({_iso(cutoff)}), so none is left to train on; "
                         "choose a later cutoff")
    log.info("split: %d training, %d validation, %d test ratings (%s)", train, validation, test,
             "by time" if split_by == "time" else "random")


@dataclasses.dataclass
class Blocks:
    """The CSR blocks of prepared ratings, by user and by item, where the shards are (futures, or values here).

    Attributes
    ----------
    by_user, by_item : list of blocks ``(indptr, indices, values)``: consecutive rows of R (users) and of R^T
        (items), each a block's ratings less their user's mean
    held_by_item : list of blocks like ``by_item`` (the same rows) of the held-out ratings, or None
    user_counts, item_counts : ndarray (n_users,), (n_items,): ratings per row
    means : ndarray (n_users,), each user's mean rating (zeros without the shift)
    total : float, the sum of the values less the means
    lowest, highest : float, the lowest and highest rating
    """

    by_user: list
    by_item: list
    held_by_item: list | None
    user_counts: np.ndarray
    item_counts: np.ndarray
    means: np.ndarray
    total: float
    lowest: float
    highest: float

    @property
    def count(self):
        return int(self.user_counts.sum())


def rating_blocks(prepared, *, parts, shift, block_ratings, held=None):
    """The ratings of ``parts`` (0 train, 1 validation, 2 test) as blocks by user (one per shard) and by item
    (about ``block_ratings`` ratings each, whole items, cut from the data alone), built where the shards are:
    by each shard's task, and for the items a shuffle of every user block's pieces to their item block. With
    ``shift``, each rating less its user's mean over ``parts``. The ratings of the parts ``held`` (the
    validation ratings, judged in the item half-step's tasks) go the same way into item blocks of the same items.

    Returns
    -------
    Blocks
    """
    tasks = prepared.tasks
    filled, starts, stops = prepared.spans()
    parts = tuple(parts)
    by_user = tasks.zip(functools.partial(shards.user_block, parts=parts, shift=shift), filled, starts, stops)
    means = np.concatenate(tasks.gather(tasks.zip(functools.partial(shards.training_means, parts=parts, shift=shift),
                                                  filled, starts, stops)))
    total = float(np.sum(tasks.gather(tasks.map(shards.block_total, by_user))))
    user_counts = np.concatenate(tasks.gather(tasks.map(shards.block_row_counts, by_user)))
    n_items = len(prepared.item_ids)
    item_counts = tasks.tree(by_user, functools.partial(shards.block_column_counts, n_columns=n_items))["counts"]
    bounds = shards.row_cuts(np.concatenate([[0], np.cumsum(item_counts)]), block_ratings)
    by_item = _item_blocks(tasks, by_user, starts, bounds)
    held_by_item = None
    if held:
        held_by_user = tasks.zip(functools.partial(shards.user_block, parts=parts, shift=shift, held=tuple(held)),
                                 filled, starts, stops)
        held_by_item = _item_blocks(tasks, held_by_user, starts, bounds)
    return Blocks(by_user, by_item, held_by_item, user_counts, item_counts, means, total,
                  *value_range_of(tasks, filled, parts))


def value_range_of(tasks, blocks, parts=None):
    """The lowest and highest value ``(float, float)`` of the ratings in ``parts`` (every one with None) of
    ``blocks`` (shards, or parts with a ``values`` column; :func:`mixlib.recsys.shards.value_range`), NaN without
    any."""
    ranges = np.array(tasks.gather(tasks.map(functools.partial(shards.value_range, parts=parts), blocks)))
    if np.isnan(ranges).all():
        return np.nan, np.nan
    return float(np.nanmin(ranges[:, 0])), float(np.nanmax(ranges[:, 1]))


def _item_blocks(tasks, by_user, starts, bounds):
    """The item blocks of the items ``bounds[j]`` to ``bounds[j + 1]`` from user blocks starting at the users
    ``starts``: a shuffle of each user block's pieces (:func:`mixlib.recsys.shards.transposed_pieces`) to groups
    of about ``sqrt(blocks)`` consecutive item blocks (:func:`_block_groups`), each group's CSR built by one task
    and cut into its blocks where it is. A piece per (user block, item block) would cost a task each, and the
    scheduler's time per task would rule the shuffle; the blocks are the same either way."""
    grouped = _block_groups(len(bounds) - 1)
    edges = bounds[grouped]
    pieces = tasks.zip(functools.partial(shards.transposed_pieces, bounds=edges), by_user, starts)
    groups = tasks.zip(shards.transposed_block, tasks.regroup(pieces, len(edges) - 1), list(edges[:-1]),
                       list(edges[1:]))
    return [block for g, group in enumerate(groups)
            for block in tasks.zip(shards.row_range, [group] * int(grouped[g + 1] - grouped[g]),
                                   *_local_ranges(bounds, grouped[g], grouped[g + 1]))]


def _block_groups(n_blocks):
    """The first block of each group of consecutive blocks, and ``n_blocks``: ``(g + 1,)`` int, groups of about
    ``sqrt(n_blocks)`` blocks (for P user blocks, P sqrt(n_blocks) pieces and n_blocks cuts, against P n_blocks
    pieces without groups)."""
    size = max(1, int(np.sqrt(n_blocks)))
    return np.append(np.arange(0, n_blocks, size), n_blocks)


def _local_ranges(bounds, first, stop):
    """The rows of the blocks ``first`` to ``stop`` within their group's CSR: ``(starts, stops)``, lists."""
    return list(bounds[first:stop] - bounds[first]), list(bounds[first + 1:stop + 1] - bounds[first])


# ------------------------------------------------------------------------- the digest and the pattern

PART_NAMES = ("train", "validation", "test")


def content_digest(prepared):
    """``(2,) uint64``: the ratings' digest (:func:`mixlib.recsys.shards.content_digest`), whatever the shards."""
    return prepared.tasks.tree(prepared.shards, shards.content_digest)["digest"]


PATTERN_CHUNK = 1 << 20  # entries per chunk of a model's pattern (8 MiB of int64)


def pattern_indptr(prepared):
    """The CSR row pointers ``(n_users + 1,)`` of every prepared rating (all parts)."""
    tasks = prepared.tasks
    filled, starts, stops = prepared.spans()
    indptr = np.zeros(len(prepared.user_ids) + 1, dtype=np.int64)  # the counts, then summed in place
    for start, stop, found in zip(starts, stops, tasks.gather(tasks.zip(shards.user_rating_counts, filled, starts,
                                                                        stops))):
        indptr[start + 1:stop + 1] = found
    return np.cumsum(indptr, out=indptr)


def write_pattern(prepared, path, indptr, chunk=PATTERN_CHUNK):
    """Write the CSR indices ``(nnz,)`` int64 of every prepared rating (with the row pointers ``indptr``,
    :func:`pattern_indptr`) as the Zarr array ``path``, one task per chunk where the shards are: each takes the
    items of the shards that its chunk overlaps, so no two tasks write one chunk."""
    import zarr

    from ..core.storage import zarr_store

    tasks = prepared.tasks
    filled, starts, _ = prepared.spans()
    total = int(indptr[-1])
    zarr.create_array(zarr_store(path), shape=(total,), chunks=(chunk,), dtype=np.int64)
    offsets = indptr[starts + [len(prepared.user_ids)]]  # each shard's first entry, and the end
    items = tasks.map(shards.shard_items, filled)
    written = []
    for first in range(0, total, chunk):
        last = min(first + chunk, total)
        lo = int(np.searchsorted(offsets, first, side="right")) - 1
        hi = int(np.searchsorted(offsets, last, side="left"))
        written.append(tasks.call(shards.write_pattern_chunk, path, first, last, int(offsets[lo]),
                                  *items[lo:hi]))
    if sum(tasks.gather(written)) != total:
        raise RuntimeError(f"the pattern written to {path} misses entries")
