"""Trained recommender models and the versioned model store.

A model directory holds ``versions/v0001``, ``versions/v0002``, ... (one Zarr group each: factors, biases, id
maps, user means, the pattern of the ratings it was trained from, config and metrics) and a ``latest`` pointer
file naming the published version. A version is complete before ``latest`` names it, and ``latest`` is replaced
atomically, so a reader sees the old model or the new one, never a mixture (see :mod:`mixlib.core.checkpoint`).
"""

import dataclasses
import datetime
import logging
import re

import numpy as np

from ..core.checkpoint import point_to, pointed, read_group, write_group
from ..core.errors import InputError
from ..core.storage import location
from .als import Factors, predict
from .ratings import parse_each

log = logging.getLogger("mixlib")

LATEST = "latest"
VERSION = re.compile(r"v(\d{4,})$")


@dataclasses.dataclass(frozen=True)
class Model:
    """A trained model: ``prediction(u, i) = user_mean_u + mu + b_u + b_i + p_u . q_i``.

    Attributes
    ----------
    factors : Factors (n_users, k) and (n_items, k), biases (zeros when off)
    mu : float, the global bias (0 when off)
    user_means : ndarray (n_users,), the user-mean shift (zeros when off)
    user_ids, item_ids : ndarray (n_users,), (n_items,), the original ids, sorted (int64 or str)
    seen_indptr, seen_indices : CSR pattern ``(n_users + 1,)``, ``(nnz,)`` of every rating the model was trained
        from (training, validation and test: what each user has already rated, left out of recommendations);
        ``seen_indices`` is None in a model that training builds, whose pattern the workers write when it is
        published (:meth:`ModelStore.publish`)
    config : dict, the training settings
    metrics : dict, what training measured
    rating_range : (float, float) or None, the lowest and highest training rating, where predictions are
        clipped (:meth:`clip`); None for a model stored before the range was kept: its predictions are not
        clipped
    user_rows : :class:`mixlib.recsys.als.SolvedRows` or None: in a model that training built, the users'
        factors and biases where they were solved (on the workers), and ``factors`` holds no user rows: the
        tasks that judge it take their users' rows (:meth:`split_users`), the version's arrays are written where
        they are (:meth:`ModelStore.publish`), and :meth:`here` gathers them
    item_rows : :class:`mixlib.recsys.als.ReplicatedRows` or None: in such a model, the items' whole copies on the
        workers, from which a worker writes the version's item arrays (``factors`` holds them here too)
    """

    factors: Factors
    mu: float
    user_means: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray
    seen_indptr: np.ndarray
    seen_indices: np.ndarray
    config: dict
    metrics: dict
    rating_range: tuple | None = None
    user_rows: object = None
    item_rows: object = None

    @property
    def feedback(self):
        """'explicit' (predicts ratings) or 'implicit' (scores preferences, for top-N lists)."""
        return self.config.get("feedback", "explicit")

    def user_index(self, ids):
        """Indices ``(n,)`` of user ids, -1 for unknown ones."""
        return _index_of(self.user_ids, ids)

    def item_index(self, ids):
        """Indices ``(n,)`` of item ids, -1 for unknown ones."""
        return _index_of(self.item_ids, ids)

    def scorer(self):
        """The model without the pattern of its ratings (what predictions need), its users here (:meth:`here`):
        what goes to the tasks that predict."""
        empty = np.zeros(0, dtype=np.int64)
        return dataclasses.replace(self.here(), seen_indptr=empty, seen_indices=empty)

    def here(self):
        """The model with every user's factors and biases in this process, nothing of it on the workers (itself
        when it has nothing there)."""
        if self.user_rows is None and self.item_rows is None:
            return self
        factors = self.factors
        if self.user_rows is not None:
            user_factors, user_bias = self.user_rows.here()
            factors = dataclasses.replace(factors, user_factors=user_factors, user_bias=user_bias)
        return dataclasses.replace(self, factors=factors, user_rows=None, item_rows=None)

    def split_users(self, bounds):
        """The model cut for tasks that each see a range of users: ``(items, users)``, ``items`` the model without
        any user (:meth:`scorer` of no users: the items' arrays, ``mu`` and the range) and ``users`` a tuple
        ``((user_factors, user_bias), user_means)`` of the rows ``bounds[j]`` to ``bounds[j + 1]`` for each j (its
        first item a future where the users are on the workers); a task joins them again with :meth:`with_users`,
        its users then indexed from ``bounds[j]``."""
        f = self.factors
        no_users = dataclasses.replace(f, user_factors=f.user_factors[:0], user_bias=f.user_bias[:0])
        empty = np.zeros(0, dtype=np.int64)
        items = dataclasses.replace(self, factors=no_users, user_means=self.user_means[:0],
                                    user_ids=self.user_ids[:0], seen_indptr=empty, seen_indices=empty, user_rows=None,
                                    item_rows=None)
        if self.user_rows is not None:
            rows = self.user_rows.ranges(np.asarray(bounds))
        else:
            rows = [(f.user_factors[a:b], f.user_bias[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        return items, [(pair, self.user_means[a:b]) for pair, a, b in zip(rows, bounds[:-1], bounds[1:])]

    def with_users(self, rows):
        """The model with the users ``rows`` ``((user_factors, user_bias), user_means)`` (:meth:`split_users`),
        for :meth:`predict_indices` of their indices from 0; their ids are not known here."""
        (user_factors, user_bias), user_means = rows
        factors = dataclasses.replace(self.factors, user_factors=user_factors, user_bias=user_bias)
        return dataclasses.replace(self, factors=factors, user_means=user_means)

    def ranking_arrays(self):
        """``(user_factors (n_users, k), item_factors (n_items, k), item_bias (n_items,))``: what ranks the items
        for each user (``b_i + p_u . q_i``; the user's own terms do not change the order), gathered here when the
        users are on the workers."""
        return (self.here().factors.user_factors, *self.factors.item_scores())

    def has_seen(self, users, items):
        """Whether the model's input held a rating of each pair: bool ``(n,)`` for user and item indices ``(n,)``
        (-1 meaning unknown, never seen), looked up in :attr:`seen_indptr` / :attr:`seen_indices`."""
        n_items = len(self.item_ids)
        known = (users >= 0) & (items >= 0)
        asked = np.unique(users[known]).astype(np.int64)  # only these users' rows of the pattern are looked at
        indptr, indices = rows_of(self.seen_indptr, self.seen_indices, asked)
        seen = np.repeat(asked, np.diff(indptr)) * n_items + indices
        out = np.zeros(len(users), dtype=bool)
        out[known] = np.isin(users[known].astype(np.int64) * n_items + items[known], seen)
        return out

    def clip(self, values, clip):
        """``values`` clipped to :attr:`rating_range` when ``clip`` and the model has a range, else unchanged.

        As Surprise does: a prediction outside the ratings the model was trained on is moved to the nearest end
        of their range, ``min(max(r, r_min), r_max)``."""
        if not clip or self.rating_range is None:
            return values
        return np.clip(values, *self.rating_range)

    def predict_indices(self, users, items, clip):
        """Predictions ``(n,)`` for user and item indices, -1 meaning unknown, clipped when ``clip``
        (:meth:`clip`).

        An unknown user or item gets the best the model has without it: ``mu`` plus the known side's bias (and
        the user's mean); the factor product needs both. Never NaN.
        """
        f = self.factors
        known_user, known_item = users >= 0, items >= 0
        both = known_user & known_item
        out = np.full(len(users), self.mu)
        out[both] = predict(f.user_factors, f.user_bias, f.item_factors, f.item_bias, self.mu, users[both],
                            items[both])
        only_user = known_user & ~known_item
        out[only_user] += f.user_bias[users[only_user]]
        only_item = known_item & ~known_user
        out[only_item] += f.item_bias[items[only_item]]
        out[known_user] += self.user_means[users[known_user]]
        return self.clip(out, clip)


USER_CHUNK = 1 << 16  # users per chunk of a version's user arrays written by the workers


def write_user_rows(users, group, chunk=USER_CHUNK):
    """Write the users' factors and biases of ``users`` (:class:`mixlib.recsys.als.SolvedRows`) as the arrays
    ``user_factors (n_users, k)`` and ``user_bias (n_users,)`` of the Zarr group at ``group``: one task per
    ``chunk`` users where they are, each taking the blocks its range overlaps, so no two tasks write one
    chunk."""
    import zarr

    from ..core.storage import zarr_store

    n = len(users)
    bounds = np.unique(np.concatenate([np.arange(0, n, chunk), [n]])).astype(np.int64)
    pieces = users.ranges(bounds)
    rank = _user_rank(users, pieces)
    for name, shape in (("user_factors", (n, rank)), ("user_bias", (n,))):
        zarr.create_array(zarr_store(group / name), shape=shape, chunks=(chunk,) + shape[1:], dtype=np.float64)
    written = [users.tasks.call(write_user_chunk, group, int(first), pair)
               for first, pair in zip(bounds[:-1], pieces)]
    if sum(users.tasks.gather(written)) != n:
        raise RuntimeError(f"the users' factors written to {group} miss rows")


def _user_rank(users, pieces):
    """The factors' columns, asked of the first piece's task (a value here)."""
    return users.tasks.gather([users.tasks.call(_columns, pieces[0])])[0]


def _columns(pair):
    return pair[0].shape[1]


def write_item_rows(items, group, chunk=USER_CHUNK):
    """Write the items' factors and biases of ``items`` (:class:`mixlib.recsys.als.ReplicatedRows`) as the arrays
    ``item_factors (n_items, k)`` and ``item_bias (n_items,)`` of the Zarr group at ``group``, by one task on a
    worker that holds a whole copy (here without a client), ``chunk`` items per chunk."""
    copy = next(iter(items.alive().values()))
    items.tasks.gather([items.tasks.call(write_whole_rows, group, copy, items.with_bias, "item", chunk)])


def write_whole_rows(group, solution, with_bias, side, chunk):
    """Write a side's whole solution ``(n, k [+ 1])`` (factors, then a bias column when ``with_bias``) as the
    arrays ``{side}_factors`` and ``{side}_bias`` of the Zarr group at ``group``."""
    import zarr

    from ..core.storage import zarr_store

    factors, bias = (solution[:, :-1], solution[:, -1]) if with_bias else (solution, np.zeros(len(solution)))
    for name, values in ((f"{side}_factors", factors), (f"{side}_bias", bias)):
        try:
            array = zarr.create_array(zarr_store(group / name), shape=values.shape,
                                      chunks=(chunk,) + values.shape[1:], dtype=np.float64)
        except FileNotFoundError:
            raise InputError(f"a worker cannot write {group / name}: the model directory must be a folder the "
                             "workers share (or a URL) when they read the ratings") from None
        array[...] = values


def write_user_chunk(group, first, pair):
    """Write the rows ``pair = (factors (b, k), bias (b,))`` from the user ``first`` into the arrays of the
    group ``group`` (created by the caller; the rows are whole chunks, or the last one). Returns b."""
    import zarr

    from ..core.storage import zarr_store

    factors, bias = pair
    for name, values in (("user_factors", factors), ("user_bias", bias)):
        try:
            array = zarr.open_array(zarr_store(group / name), mode="r+")
        except FileNotFoundError:
            raise InputError(f"a worker cannot open {group / name}: the model directory must be a folder the "
                             "workers share (or a URL) when they read the ratings") from None
        array[first:first + len(values)] = values
    return len(bias)


def stored_rows(root, name, starts, counts):
    """Rows of the stored pattern of the version ``name`` of the store at ``root``, spanning ``counts`` entries
    from ``starts`` (:func:`row_spans`): their CSR ``(indptr (b + 1,), indices)``, read from its ``seen_indices``
    array entry by entry (only the chunks that hold them)."""
    sub_indptr, positions = entry_positions(starts, counts)
    array = _stored_pattern(root, name)
    indices = array.get_coordinate_selection(positions) if len(positions) else np.zeros(0, np.int64)
    return sub_indptr, np.asarray(indices, np.int64)


def _stored_pattern(root, name):
    """The ``seen_indices`` Zarr array of a stored version, opened to read."""
    import zarr

    from ..core.storage import zarr_store

    return zarr.open_array(zarr_store(ModelStore(root).versions / name / "seen_indices", read_only=True), mode="r")


def stored_item_counts(root, name, n_items):
    """Each item's count ``(n_items,)`` in the stored pattern of the version ``name`` (its ratings), read chunk
    by chunk."""
    array = _stored_pattern(root, name)
    counts = np.zeros(n_items, np.int64)
    step = array.chunks[0]
    for start in range(0, array.shape[0], step):
        counts += np.bincount(array[start:start + step], minlength=n_items)
    return counts


def load_model(root, name):
    """The whole model ``name`` of the store at ``root`` (a task: the workers read it where they are)."""
    return ModelStore(root).load(name)


def top_unseen(user_factors, seen_indptr, seen_indices, item_factors, item_bias, top):
    """The ``top`` items of highest score ``b_i + p_u . q_i`` that each user has not rated (a kernel).

    Parameters
    ----------
    user_factors : ndarray (b, k), a block of users
    seen_indptr, seen_indices : CSR ``(b + 1,)``, ``(nnz,)`` of the items each user has rated
    item_factors : ndarray (n_items, k); item_bias : ndarray (n_items,)
    top : int

    Returns
    -------
    items : ndarray (b, top) int64, best first, -1 where a user has fewer unseen items
    scores : ndarray (b, top) float64, NaN where ``items`` is -1
    """
    scores = user_factors @ item_factors.T + item_bias  # (b, n_items)
    rows = np.repeat(np.arange(len(user_factors)), np.diff(seen_indptr))
    scores[rows, seen_indices] = -np.inf
    keep = min(top, scores.shape[1])
    candidates = _top_candidates(scores, keep)
    order = np.lexsort((candidates, -np.take_along_axis(scores, candidates, 1)))  # equal scores: lower item first
    best = np.take_along_axis(candidates, order, 1)
    best_scores = np.take_along_axis(scores, best, 1)
    items = np.full((len(scores), top), -1, dtype=np.int64)
    values = np.full((len(scores), top), np.nan)
    unseen = np.isfinite(best_scores)
    items[:, :keep] = np.where(unseen, best, -1)
    values[:, :keep] = np.where(unseen, best_scores, np.nan)
    return items, values


def _top_candidates(scores, keep):
    """The ``keep`` items ``(b, keep)`` of highest score of each row of ``scores (b, n_items)``, in no order;
    among items tied at the lowest score taken, those of lowest index (``np.argpartition`` alone picks any of
    them, and its pick can change with the rest of the row)."""
    kth = scores.shape[1] - keep
    candidates = np.argpartition(scores, kth, axis=1)[:, kth:]
    taken = np.take_along_axis(scores, candidates, 1)
    lowest = taken.min(axis=1, initial=np.inf)[:, None]
    tied_rows = np.flatnonzero((scores == lowest).sum(axis=1) > (taken == lowest).sum(axis=1))
    for r in tied_rows:  # the ties straddle the cut: every item above it, then the tied ones by index
        above = np.flatnonzero(scores[r] > lowest[r, 0])
        candidates[r] = np.concatenate([above, np.flatnonzero(scores[r] == lowest[r, 0])[:keep - len(above)]])
    return candidates


def rows_of(indptr, indices, rows):
    """The CSR sub-matrix ``(indptr (len(rows) + 1,), indices)`` of ``rows``; a row -1 is empty."""
    sub_indptr, positions = entry_positions(*row_spans(indptr, rows))
    return sub_indptr, indices[positions]


def row_spans(indptr, rows):
    """``(starts, counts)``, each ``(len(rows),)``: where each row of ``rows`` starts in a CSR matrix's indices
    and its count of entries (0 for a row -1)."""
    known = np.maximum(rows, 0)
    return indptr[known], np.where(rows >= 0, indptr[known + 1] - indptr[known], 0)


def entry_positions(starts, counts):
    """``(indptr (b + 1,), positions (nnz,))`` of rows spanning ``counts`` entries from ``starts``: the row
    pointers of their sub-matrix and where its entries are in the whole matrix's indices."""
    sub_indptr = np.append(0, np.cumsum(counts))
    return sub_indptr, np.repeat(starts - sub_indptr[:-1], counts) + np.arange(sub_indptr[-1])


def _index_of(known, ids):
    """Positions of ``ids`` in the sorted array ``known``, -1 where absent (ids of the other kind: absent)."""
    ids = np.asarray(ids)
    if known.dtype.kind != ids.dtype.kind and not (known.dtype.kind in "iu" and ids.dtype.kind in "iu"):
        ids = ids.astype(known.dtype) if known.dtype.kind == "U" else _as_int_ids(ids)
    position = np.clip(np.searchsorted(known, ids), 0, max(len(known) - 1, 0))
    found = (known[position] == ids) if len(known) else np.zeros(len(ids), dtype=bool)
    return np.where(found, position, -1)


def _as_int_ids(ids):
    """String ids as integers where they are integers; the others map to a value no model holds."""
    return parse_each(ids, int, np.iinfo(np.int64).min)


class ModelStore:
    """The versions under ``model_dir`` and the ``latest`` pointer."""

    def __init__(self, model_dir):
        self.root = location(model_dir, "--model-dir")
        self.versions = self.root / "versions"

    def latest_name(self):
        return pointed(self.root, LATEST)

    def load(self, name=None, pattern=True):
        """The model ``name`` (default: the published one); InputError when there is none. Without ``pattern``,
        its ``seen_indices`` (an entry per rating) are not read: None."""
        name = name or self.latest_name()
        if name is None:
            raise InputError(f"no published model in {self.root} (no '{LATEST}' pointer); run "
                             "`python -m jobs.recommend train` first")
        arrays, attrs = read_group(self.versions / name, skip=() if pattern else ("seen_indices",))
        factors = Factors(**{f.name: arrays[f.name] for f in dataclasses.fields(Factors)})
        rating_range = attrs.get("rating_range")  # absent from versions stored before it was kept
        return Model(factors, attrs["mu"], arrays["user_means"], arrays["user_ids"], arrays["item_ids"],
                     arrays["seen_indptr"], arrays.get("seen_indices"), attrs["config"],
                     {**attrs["metrics"], "version": name}, rating_range and tuple(rating_range))

    def publish(self, model, write_seen=None):
        """Write ``model`` as the next version and point ``latest`` at it; return the version's name.

        ``write_seen`` : callable ``(array path)`` or None: writes the ``seen_indices`` array at the path it is
        given (by the workers, where the ratings are), for a model whose ``seen_indices`` is None. A model whose
        users are on the workers (``user_rows``) has their arrays written there (:func:`write_user_rows`), and its
        items' arrays by a worker that holds them (``item_rows``, :func:`write_item_rows`).
        """
        self.versions.mkdir(parents=True, exist_ok=True)
        arrays = model.factors.named()
        arrays.update({"user_means": model.user_means, "user_ids": model.user_ids, "item_ids": model.item_ids,
                       "seen_indptr": model.seen_indptr})
        if write_seen is None:
            arrays["seen_indices"] = model.seen_indices
        if model.user_rows is not None:
            del arrays["user_factors"], arrays["user_bias"]
        if model.item_rows is not None:
            del arrays["item_factors"], arrays["item_bias"]

        def fill(group):
            if write_seen is not None:
                write_seen(group / "seen_indices")
            if model.user_rows is not None:
                write_user_rows(model.user_rows, group)
            if model.item_rows is not None:
                write_item_rows(model.item_rows, group)

        created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        attrs = {"mu": model.mu, "config": model.config, "metrics": model.metrics, "created": created,
                 "rating_range": model.rating_range and list(model.rating_range)}
        while True:
            name = f"v{self._last_number() + 1:04d}"
            try:
                write_group(self.versions / name, arrays, attrs, fill)
                break
            except OSError:  # another trainer took this number first
                if not (self.versions / name).exists():
                    raise
        point_to(self.root, name, LATEST)
        log.info("published model version %s in %s", name, self.root)
        return name

    def _last_number(self):
        numbers = [int(m.group(1)) for p in self.versions.iterdir() if (m := VERSION.match(p.name))]
        return max(numbers, default=0)
