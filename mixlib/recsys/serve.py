"""Serving the published model: ``python -m jobs.recommend predict``, ``recommend`` and ``evaluate``."""

import dataclasses
import functools
import logging

import numpy as np

from ..core.errors import InputError
from ..core.outputs import json_text, optional_output, staged_outputs
from . import shards
from .dataset import Tasks, dataset_files, identity, is_dataset, prepare_dataset, value_range_of
from .ranking import by_user, ranking_means, relevant_threshold
from .ratings import read_id_columns, read_ratings
from .settings import column_names
from .store import ModelStore, load_model, row_spans, rows_of, stored_item_counts, stored_rows, top_unseen

log = logging.getLogger("mixlib")


@dataclasses.dataclass(frozen=True)
class PredictPlan:
    """A checked predict run: the model (without its pattern) and the pairs, read here from one file (``users``,
    ``items``: ids) or, for a dataset, by the workers from ``files``; ``out`` a CSV or a Parquet dataset."""

    model: object
    users: np.ndarray | None
    items: np.ndarray | None
    files: tuple
    out: object


def plan_predict(settings):
    if not settings.pairs or not settings.out:
        raise InputError("predict needs --pairs PATH (a file, a folder or a glob of files) and --out PATH.csv (one "
                         "file) or PATH.parquet (a dataset of part files)")
    out = optional_output(settings.out, settings.overwrite, RECOMMEND_FORMATS, "--out")
    model = _published_model(settings, pattern=False)
    if is_dataset(settings.pairs):
        return PredictPlan(model, None, None, tuple(dataset_files(settings.pairs)), out)
    users, items = read_id_columns(settings.pairs, ("user", "item"), column_names(settings))
    return PredictPlan(model, users, items, (), out)


def _published_model(settings, pattern=True):
    """The published model (without its pattern of ratings unless ``pattern``); says when its predictions cannot
    be clipped as ``clip_predictions`` asks."""
    model = ModelStore(settings.model_dir).load(pattern=pattern)
    if settings.clip_predictions and model.rating_range is None and model.feedback == "explicit":
        log.info("model %s was stored without its training rating range: its predictions are not clipped "
                 "(train a new version to clip them)", model.metrics["version"])
    return model


def predict_runs_here(settings, job_plan):
    """predict runs in this process (:func:`mixlib.core.cli.job_main` asks) for pairs in one file: it looks up
    factors and biases, which no cluster would make faster; the workers read and predict a dataset's parts."""
    return not job_plan.files


def predict_worker_paths(job_plan, most=4):
    """What the workers read (a dataset's files, the first ``most`` as a sample) and where they write (the folder
    of a Parquet dataset of predictions)."""
    out = job_plan.out
    return tuple(job_plan.files[:most]), ((out.parent,) if out.suffix.lower() == ".parquet" else ())


def recommend_runs_here(settings, job_plan):
    """recommend runs in this process when its users fit one block of ``--block-users`` (one task's work)."""
    return len(job_plan[1]) <= settings.block_users


def evaluate_runs_here(settings, job_plan):
    """evaluate runs in this process when the users it ranks (with ``--top``) fit one block of ``--block-users``."""
    return not job_plan.files and len(np.unique(job_plan.parts[0]["users"])) <= settings.block_users


def run_predict(settings, job_plan, client):
    """Write user,item,prediction for every requested pair: to one CSV, or to a Parquet dataset (``--out
    NAME.parquet``, a folder of part files). The pairs of a dataset are read, predicted and written part by part
    by the workers (``predict-part`` tasks; in this process without a client), one output part per input part;
    to a CSV their rows come here."""
    model, out = job_plan.model, job_plan.out
    parquet = out.suffix.lower() == ".parquet"
    with staged_outputs() as stage:
        target = stage(out)
        if parquet:
            target.mkdir(parents=True)
        pieces = [(job_plan.users, job_plan.items)] if not job_plan.files else job_plan.files
        tasks = Tasks(client if job_plan.files else None, name="predict")
        shared = tasks.shared(model.scorer())
        numbered = [(piece, number, target / f"part-{number:05d}.parquet" if parquet else None)
                    for number, piece in enumerate(pieces)]
        results = tasks.gather(tasks.map(_predicted_part, numbered, shared, column_names(settings),
                                         settings.clip_predictions))
        counts = np.sum([r["counts"] for r in results], axis=0)
        log.info("%d pairs: %d with an unknown user, %d with an unknown item (predicted from the biases)", *counts)
        if not parquet:
            rows = {name: np.concatenate([r["rows"][name] for r in results]) for name in ("user", "item",
                                                                                          "prediction")}
            _write_csv(target, ("user", "item", "prediction"), [rows["user"], rows["item"],
                                                                _numbers(rows["prediction"])])


def _predicted_part(numbered, model, names, clip):
    """The predictions of one part of the pairs (a kernel): ``numbered`` is ``(ids or path, number, part path or
    None)``, the pairs as ``(users, items)`` id arrays or a file read here. With a part path, the rows are written
    there as Parquet (under a temporary name, then renamed: a task run again replaces the part whole). Returns
    ``{"counts": (pairs, unknown users, unknown items), "rows": columns or None}``."""
    piece, number, part = numbered
    users, items = piece if isinstance(piece, tuple) else read_id_columns(piece, ("user", "item"), names)
    user_index, item_index = model.user_index(users), model.item_index(items)
    rows = {"user": users, "item": items, "prediction": model.predict_indices(user_index, item_index, clip)}
    counts = np.array([len(users), (user_index < 0).sum(), (item_index < 0).sum()])
    if part is None:
        return {"counts": counts, "rows": rows}
    _write_part(rows, part)
    return {"counts": counts, "rows": None}


def _write_part(rows, part):
    """Write the columns ``rows`` as the Parquet file ``part``, under a temporary name and then renamed: a task
    run again after a lost worker replaces the part whole."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    temporary = part.with_name(f".{part.name}.tmp")
    pq.write_table(pa.table(rows), temporary)
    temporary.replace(part)


RECOMMEND_FORMATS = (".csv", ".parquet")


def plan_recommend(settings):
    if not settings.out:
        raise InputError("recommend needs --out PATH.csv (one file) or PATH.parquet (a dataset of part files)")
    out = optional_output(settings.out, settings.overwrite, RECOMMEND_FORMATS, "--out")
    model = _published_model(settings, pattern=False)  # the blocks' tasks read their users' rows of the pattern
    store = ModelStore(settings.model_dir)
    if not settings.users:
        return model, model.user_ids, out, store
    users = read_id_columns(settings.users, ("user",), column_names(settings))[0]
    if not len(users):
        raise InputError(f"--users {settings.users} lists no user")
    _, first = np.unique(users, return_index=True)
    if len(first) < len(users):
        log.warning("--users %s: %d repeated id(s) left out; each user's list is written once", settings.users,
                    len(users) - len(first))
        users = users[np.sort(first)]
    return model, users, out, store


def recommend_worker_paths(job_plan):
    """The model directory, whose pattern the workers read, and the folder a Parquet dataset of recommendations is
    written into by them (not for a CSV, which this process writes)."""
    out, store = job_plan[2], job_plan[3]
    return (store.root,), ((out.parent,) if out.suffix.lower() == ".parquet" else ())


def run_recommend(settings, job_plan, client):
    """Write the top-N unseen items of each user (unknown users: the items with the highest bias, or the most
    popular ones for an implicit model, which has no biases), block by block of ``block_users`` users: to one
    CSV written here from the blocks' rows, or to a Parquet dataset (``--out NAME.parquet``, a folder) whose part
    files the blocks' tasks write, one per block, so that no list passes through this process."""
    model, users, out, store = job_plan
    index = model.user_index(users)
    top = _capped(settings.top, model)
    fallback = "the top items by bias" if model.feedback == "explicit" else "the most popular items"
    log.info("recommending %d items to %d users (%d unknown: %s)", top, len(users), (index < 0).sum(), fallback)
    lists = ItemLists.of(model, top, settings.clip_predictions, store)
    with staged_outputs() as stage:
        target = stage(out)
        folder = target if out.suffix.lower() == ".parquet" else None
        if folder is not None:
            folder.mkdir(parents=True)
        blocks = _recommended_blocks(client, model, lists, np.asarray(users), index, settings.block_users, folder,
                                     store)
        if folder is None:
            rows = {name: np.concatenate([b[name] for b in blocks]) for name in ("user", "rank", "item", "score")}
            _write_csv(target, ("user", "rank", "item", "score"),
                       [rows["user"], rows["rank"], rows["item"], _numbers(rows["score"])])
        else:
            log.info("wrote %d recommendations in %d part file(s)", sum(blocks), len(blocks))


def recommendations(model, users, top, clip, block_users=2048):
    """The top-``top`` unseen items of each of ``users`` (ids; unknown ones get the fallback of
    :func:`run_recommend`) by a model whose pattern is in memory (``seen_indices``), computed in this process: the
    columns ``user``, ``rank``, ``item`` and ``score`` of :func:`recommendation_rows`, block after block."""
    users = np.asarray(users)
    lists = ItemLists.of(model, min(top, len(model.item_ids)), clip, None)
    blocks = _recommended_blocks(None, model, lists, users, model.user_index(users), block_users, None, None)
    return {name: np.concatenate([b[name] for b in blocks]) for name in ("user", "rank", "item", "score")}


def _recommended_blocks(client, model, lists, users, index, block_users, folder, store):
    """Each block's :func:`recommendation_rows` (``folder`` None), or the rows each block wrote to its part file
    in ``folder``, computed in this process or as ``recommend-top`` tasks, each reading its users' rows of the
    model's pattern from ``store`` (:func:`mixlib.recsys.store.stored_rows`), or taking them from the model when it
    holds its pattern (``store`` None)."""
    f = model.factors

    def blocks(shared):  # (arguments of _block_rows, part file) of each block
        for number, start in enumerate(range(0, len(users), block_users)):
            block = index[start:start + block_users]
            known = np.maximum(block, 0)
            seen = (rows_of(model.seen_indptr, model.seen_indices, block) if store is None else
                    (store.root, model.metrics["version"], *row_spans(model.seen_indptr, block)))
            factors = np.where((block >= 0)[:, None], f.user_factors[known], 0.0)
            offsets = np.where(block >= 0, model.mu + f.user_bias[known] + model.user_means[known], model.mu)
            part = None if folder is None else folder / f"part-{number:05d}.parquet"
            yield (shared, users[start:start + block_users], block < 0, factors, offsets, seen, part)

    if client is None:
        return [_block_rows(*arguments) for arguments in blocks(lists)]
    from ..core.cluster import with_rebuilds

    def run(attempt):  # a worker lost with the scattered lists: scatter them again, every block again
        shared = client.scatter(lists, broadcast=True, hash=False)
        return client.gather([client.submit(_block_rows, *arguments, pure=False,
                                            key=f"recommend-top-{attempt}-{number}")
                              for number, arguments in enumerate(blocks(shared))])

    return with_rebuilds(run, "recommend", "give the workers more memory or recommend to fewer users at a time "
                                           "(--block-users)")


@dataclasses.dataclass(frozen=True)
class ItemLists:
    """What a block of users' top-N lists need of a model, sent to the workers once (no user's data).

    Attributes
    ----------
    item_factors : ndarray (n_items, k); item_bias : ndarray (n_items,); item_ids : ndarray (n_items,)
    popular : ndarray (top,) int, an implicit model's list for unknown users (its most frequent items), or None
    top : int; rating_range : (float, float) or None, where scores are clipped
    """

    item_factors: np.ndarray
    item_bias: np.ndarray
    item_ids: np.ndarray
    popular: np.ndarray | None
    top: int
    rating_range: tuple | None

    @classmethod
    def of(cls, model, top, clip, store):
        """The lists of ``model``, the published version of ``store`` (an implicit model's popular items are
        counted from its stored pattern), or a model that holds its pattern (``store`` None)."""
        f = model.factors
        popular = None
        if model.feedback == "implicit":
            popularity = (np.bincount(model.seen_indices, minlength=len(model.item_ids)) if store is None else
                          stored_item_counts(store.root, model.metrics["version"], len(model.item_ids)))
            popular = np.argsort(-popularity, kind="stable")[:top]
        return cls(f.item_factors, f.item_bias, model.item_ids, popular, top,
                   model.rating_range if clip else None)


def recommendation_rows(lists, users, unknown, user_factors, offsets, seen):
    """The recommendations of a block of users: columns ``user``, ``rank`` (1 = best), ``item`` (ids) and
    ``score``, a user's rows in rank order (a kernel).

    Parameters
    ----------
    lists : ItemLists
    users : ndarray (b,), the users' ids; unknown : ndarray (b,) bool, users the model does not know
    user_factors : ndarray (b, k), zeros for unknown users; offsets : ndarray (b,), each user's ``mu + b_u +
        mean_u`` (``mu`` for unknown ones)
    seen : tuple (indptr (b + 1,), indices), the items each user rated (left out), or ``(store root, version,
        starts, counts)`` to read them from the store (:func:`mixlib.recsys.store.stored_rows`)
    """
    if len(seen) == 4:
        seen = stored_rows(*seen)
    top = lists.top
    items, scores = top_unseen(user_factors, *seen, lists.item_factors, lists.item_bias, top)
    if lists.popular is not None and unknown.any():
        items[unknown] = lists.popular
        scores[unknown] = 0.0  # no factors: the model's preference score is 0
    scores = scores + offsets[:, None]
    if lists.rating_range is not None:  # ranked unclipped: clipping would make ties
        scores = np.clip(scores, *lists.rating_range)
    present = items >= 0
    return {"user": np.repeat(users, top).reshape(items.shape)[present],
            "rank": np.broadcast_to(np.arange(1, top + 1), items.shape)[present],
            "item": lists.item_ids[items[present]], "score": scores[present]}


def _block_rows(lists, users, unknown, user_factors, offsets, seen, part):
    """:func:`recommendation_rows` of a block, or, with a ``part`` path, written there as Parquet
    (:func:`_write_part`): the number of rows."""
    rows = recommendation_rows(lists, users, unknown, user_factors, offsets, seen)
    if part is None:
        return rows
    _write_part(rows, part)
    return len(rows["user"])


def _capped(top, model):
    """``top``, or the model's item count when it has fewer items (a list never holds more)."""
    if top > len(model.item_ids):
        log.info("--top %d: the model knows %d items, so the lists hold at most that many", top, len(model.item_ids))
    return min(top, len(model.item_ids))


@dataclasses.dataclass(frozen=True)
class EvaluatePlan:
    """A checked evaluate run: the model, the held-out ratings (one part in memory, read here from one file, or a
    dataset's files that the workers read), where the metrics go, and the model directory (the workers read the
    whole model from it to rank a dataset's users)."""

    model: object
    parts: list
    metrics: object
    files: tuple = ()
    store: object = None


def plan_evaluate(settings):
    if not settings.ratings:
        raise InputError("evaluate needs --ratings PATH (held-out ratings: a file, or a folder or glob of files)")
    metrics = optional_output(settings.metrics, settings.overwrite, (".json",), "--metrics")
    dataset = is_dataset(settings.ratings)
    model = _published_model(settings, pattern=not dataset)
    implicit = model.feedback == "implicit"
    if implicit and not settings.top:
        raise InputError(f"model {model.metrics['version']} learnt implicit feedback: it is judged by its top-N "
                         "lists, so give --top N (e.g. --top 10)")
    if dataset:  # read by the workers when the run starts
        files = tuple(dataset_files(settings.ratings))
        return EvaluatePlan(model, [], metrics, files, ModelStore(settings.model_dir))
    heldout = read_ratings(settings.ratings, settings.drop_invalid, column_names(settings), values_optional=implicit)
    if not heldout.shape[2]:
        raise InputError(f"held-out ratings {settings.ratings} hold no rating to evaluate on")
    if settings.top and not (heldout.values >= relevant_threshold(heldout.values, settings.relevant)).any():
        raise InputError(f"no held-out rating in {settings.ratings} reaches --relevant {settings.relevant:g} (the "
                         f"highest is {heldout.values.max():g}): lower --relevant")
    part = {"users": heldout.user_ids[heldout.users], "items": heldout.item_ids[heldout.items],
            "values": heldout.values}
    return EvaluatePlan(model, [part], metrics)


def evaluate_worker_paths(job_plan, most=4):
    """What the workers read: a dataset's files (the first ``most``, as a sample) and the model directory."""
    if not job_plan.files:
        return (), ()
    return (*job_plan.files[:most], job_plan.store.root), ()


def run_evaluate(settings, job_plan, client):
    """RMSE and MAE of an explicit model on held-out ratings; with ``--top N`` (always for an implicit model), the
    ranking metrics of its top-N lists (:func:`ranking_metrics`). Each part of the held-out ratings is indexed and
    summed by a task (in this process without a client), the sums added in a tree."""
    model = job_plan.model
    tasks = Tasks(client, name="evaluate")
    scorer = tasks.shared(model.scorer())
    if job_plan.files:
        indexed = _indexed_dataset(tasks, job_plan.files, model, settings)
    else:
        indexed = tasks.map(_indexed_heldout, job_plan.parts, scorer)
    kernel = functools.partial(_heldout_sums, clip=settings.clip_predictions, explicit=model.feedback == "explicit")
    sums = tasks.tree(tasks.zip(kernel, indexed, [scorer] * len(indexed)), identity)
    if not sums["ratings"]:
        raise InputError(f"held-out ratings {settings.ratings} hold no rating to evaluate on")
    metrics = {"ratings": int(sums["ratings"]), "unknown_users": int(sums["unknown_users"]),
               "unknown_items": int(sums["unknown_items"]), "feedback": model.feedback}
    if model.feedback == "explicit":
        metrics.update({"rmse": float(np.sqrt(sums["squares"] / sums["ratings"])),
                        "mae": float(sums["absolute"] / sums["ratings"])})
    metrics["clipped"] = settings.clip_predictions and model.rating_range is not None
    if settings.top:
        whole = tasks.call(load_model, job_plan.store.root, model.metrics["version"]) if job_plan.files else \
            tasks.shared(model)
        metrics.update(ranking_metrics(tasks, whole, model, indexed, top=_capped(settings.top, model),
                                       relevant=settings.relevant, block_users=settings.block_users,
                                       where=settings.ratings))
    log.info("evaluate: %s (%s)", ", ".join(f"{k} {v:.6g}" if isinstance(v, float) else f"{k} {v}"
                                            for k, v in metrics.items() if k != "clipped"),
             "predictions clipped to the training range" if metrics["clipped"] else "predictions not clipped")
    if job_plan.metrics is not None:
        with staged_outputs() as stage:
            stage(job_plan.metrics).write_text(json_text(metrics))
    return metrics


def _indexed_dataset(tasks, files, model, settings):
    """The held-out ratings of a dataset's ``files`` in ``model``'s indices, shard by shard of users: read and
    rid of repeated pairs (the last in path and row order wins, as in one file) by the preparation graph of
    training without its split (:func:`mixlib.recsys.dataset.prepare_dataset`), then mapped to the model's ids
    (``users``, ``items``: -1 for an id it does not know; ``values``)."""
    prepared = prepare_dataset(tasks, files, names=column_names(settings), implicit=model.feedback == "implicit",
                               drop_invalid=settings.drop_invalid, min_entries=0, validation=0, test=0, seed=0,
                               split_by=None)
    n = len(prepared.shards)
    user_map = tasks.shared(model.user_index(prepared.user_ids))
    item_map = tasks.shared(model.item_index(prepared.item_ids))
    return tasks.zip(_mapped_shard, prepared.shards, [user_map] * n, [item_map] * n)


def _mapped_shard(shard, user_map, item_map):
    """A shard's ratings in a model's indices by the maps ``user_map (n_users,)``, ``item_map (n_items,)``."""
    return {"users": user_map[shard["users"]], "items": item_map[shard["items"]], "values": shard["values"]}


def _indexed_heldout(part, model):
    """A part's held-out ratings in ``model``'s indices (-1: an id it does not know): ``users``, ``items``,
    ``values``."""
    return {"users": model.user_index(part["users"]), "items": model.item_index(part["items"]),
            "values": np.asarray(part["values"], np.float64)}


def _heldout_sums(part, model, clip, explicit):
    """A part's counts (ratings, unknown users, unknown items) and, for an ``explicit`` model, its squared and
    absolute residuals summed."""
    users, items, values = part["users"], part["items"], part["values"]
    out = {"ratings": len(values), "unknown_users": int((users < 0).sum()), "unknown_items": int((items < 0).sum())}
    if explicit:
        residual = values - model.predict_indices(users, items, clip)
        out.update({"squares": float((residual ** 2).sum()), "absolute": float(np.abs(residual).sum())})
    return out


RANKING_BLOCKS = 16  # a ranking task's users: this many blocks of block_users (each ranked in turn)


def ranking_metrics(tasks, whole, model, indexed, *, top, relevant, block_users, where):
    """precision@N, recall@N, nDCG@N, MAP@N and coverage@N of the model's top-N lists (:mod:`.ranking`) over the
    known users with at least one relevant held-out item, ranking every item the user has not rated in the model's
    input: each part's relevant pairs are cut by range of users, each range's pieces joined and ranked by one
    task (:func:`mixlib.recsys.shards.ranking_sums_of`), the sums added in a tree.

    Parameters
    ----------
    tasks : Tasks; whole : the whole model where the tasks run (with its pattern); model : Model, here
    indexed : list of parts (:func:`_indexed_heldout`), where the tasks run
    top, block_users : int; relevant : float, ``--relevant``; where : str, names the ratings in messages
    """
    threshold = relevant_threshold(np.array(value_range_of(tasks, indexed)), relevant)
    span = block_users * RANKING_BLOCKS
    bounds = np.append(np.arange(0, len(model.user_ids), span), len(model.user_ids))
    n_ranges = len(bounds) - 1
    cut = tasks.zip(functools.partial(_relevant_pieces, threshold=threshold, bounds=bounds), indexed,
                    [whole] * len(indexed))
    counts = tasks.tree(cut, _piece_counts)
    if counts["seen"]:
        log.warning("evaluate --top: %d relevant held-out pair(s) were in the model's input, so they cannot be "
                    "recommended; they are left out (evaluate on ratings the model was not trained on)",
                    counts["seen"])
    if not counts["pairs"]:
        raise InputError(f"evaluate --top: no relevant held-out pair of {where} of a user and an item the model "
                         "knows is left to rank (those in the model's input cannot be recommended): evaluate on "
                         "ratings the model was not trained on")
    groups = tasks.regroup(cut, n_ranges)
    ranked = tasks.zip(functools.partial(_range_ranking, top=top, block_users=block_users), groups,
                       [whole] * n_ranges)
    metrics = ranking_means(tasks.tree(ranked, identity), top, len(model.item_ids))
    return {**metrics, "relevant_rating": relevant if np.isfinite(threshold) else "every held-out pair"}


def _relevant_pieces(part, model, threshold, bounds):
    """A part's relevant pairs of known users and items that ``model`` did not see, cut by the user ranges
    ``bounds (r + 1,)``: ``r`` pieces ``(users, items)``, then ``{"seen", "pairs"}``, the relevant pairs left out
    because the model saw them and those kept."""
    users, items, values = part["users"], part["items"], part["values"]
    keep = (values >= threshold) & (users >= 0) & (items >= 0)
    users, items = users[keep], items[keep]
    seen = model.has_seen(users, items)
    users, items = users[~seen], items[~seen]
    order = np.argsort(users, kind="stable")
    users, items = users[order], items[order]
    cuts = np.searchsorted(users, bounds)
    pieces = [(users[a:b], items[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
    return pieces + [{"seen": int(seen.sum()), "pairs": len(users)}]


def _piece_counts(cut):
    return cut[-1]


def _range_ranking(pieces, model, top, block_users):
    """The summed ranking metrics of a range of users from its pieces (:func:`_relevant_pieces`) of every part,
    each user ranking every item outside ``model``'s input."""
    users = np.concatenate([p[0] for p in pieces])
    items = np.concatenate([p[1] for p in pieces])
    ranked, relevant = by_user(users, items)
    exclude = rows_of(model.seen_indptr, model.seen_indices, ranked)
    return shards.ranking_sums_of(ranked, exclude, relevant, model.ranking_arrays(), top, block_users)
def _numbers(values):
    return np.char.mod("%.6g", values)


def _write_csv(path, header, columns):
    """A CSV with a header line; ``columns`` are arrays of equal length (written as text)."""
    import csv

    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(zip(*columns))
