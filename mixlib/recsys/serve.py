"""Serving the published model: ``python -m jobs.recommend predict``, ``recommend`` and ``evaluate``."""

import dataclasses
import logging

import numpy as np

from ..core.errors import InputError
from ..core.outputs import json_text, optional_output, staged_outputs
from .ranking import pairs_ranking, relevant_threshold
from .dataset import Tasks, dataset_files, is_dataset
from .ratings import read_id_columns, read_ratings
from .settings import column_names
from .store import ModelStore, residual_errors, rows_of, top_unseen

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
    return len(np.unique(job_plan[1].users)) <= settings.block_users


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
    model = _published_model(settings)
    if not settings.users:
        return model, model.user_ids, out
    users = read_id_columns(settings.users, ("user",), column_names(settings))[0]
    if not len(users):
        raise InputError(f"--users {settings.users} lists no user")
    _, first = np.unique(users, return_index=True)
    if len(first) < len(users):
        log.warning("--users %s: %d repeated id(s) left out; each user's list is written once", settings.users,
                    len(users) - len(first))
        users = users[np.sort(first)]
    return model, users, out


def recommend_worker_paths(job_plan):
    """The folder a Parquet dataset of recommendations is written into by the workers (nothing for a CSV, which
    this process writes)."""
    out = job_plan[2]
    return (), ((out.parent,) if out.suffix.lower() == ".parquet" else ())


def run_recommend(settings, job_plan, client):
    """Write the top-N unseen items of each user (unknown users: the items with the highest bias, or the most
    popular ones for an implicit model, which has no biases), block by block of ``block_users`` users: to one
    CSV written here from the blocks' rows, or to a Parquet dataset (``--out NAME.parquet``, a folder) whose part
    files the blocks' tasks write, one per block, so that no list passes through this process."""
    model, users, out = job_plan
    index = model.user_index(users)
    top = _capped(settings.top, model)
    fallback = "the top items by bias" if model.feedback == "explicit" else "the most popular items"
    log.info("recommending %d items to %d users (%d unknown: %s)", top, len(users), (index < 0).sum(), fallback)
    lists = ItemLists.of(model, top, settings.clip_predictions)
    with staged_outputs() as stage:
        target = stage(out)
        folder = target if out.suffix.lower() == ".parquet" else None
        if folder is not None:
            folder.mkdir(parents=True)
        blocks = _recommended_blocks(client, model, lists, np.asarray(users), index, settings.block_users, folder)
        if folder is None:
            rows = {name: np.concatenate([b[name] for b in blocks]) for name in ("user", "rank", "item", "score")}
            _write_csv(target, ("user", "rank", "item", "score"),
                       [rows["user"], rows["rank"], rows["item"], _numbers(rows["score"])])
        else:
            log.info("wrote %d recommendations in %d part file(s)", sum(blocks), len(blocks))


def _recommended_blocks(client, model, lists, users, index, block_users, folder):
    """Each block's :func:`recommendation_rows` (``folder`` None), or the rows each block wrote to its part file
    in ``folder``, computed in this process or as ``recommend-top`` tasks."""
    shared = lists if client is None else client.scatter(lists, broadcast=True, hash=False)
    f = model.factors
    results = []
    for number, start in enumerate(range(0, len(users), block_users)):
        block = index[start:start + block_users]
        known = np.maximum(block, 0)
        seen = rows_of(model.seen_indptr, model.seen_indices, block)
        factors = np.where((block >= 0)[:, None], f.user_factors[known], 0.0)
        offsets = np.where(block >= 0, model.mu + f.user_bias[known] + model.user_means[known], model.mu)
        arguments = (shared, users[start:start + block_users], block < 0, factors, offsets, seen)
        part = None if folder is None else folder / f"part-{number:05d}.parquet"
        results.append(_block_rows(*arguments, part) if client is None else
                       client.submit(_block_rows, *arguments, part, pure=False, key=f"recommend-top-{number}"))
    return results if client is None else client.gather(results)


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
    def of(cls, model, top, clip):
        f = model.factors
        popular = None
        if model.feedback == "implicit":
            popularity = np.bincount(model.seen_indices, minlength=len(model.item_ids))
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
    seen : tuple (indptr (b + 1,), indices), the items each user rated (left out)
    """
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


def plan_evaluate(settings):
    if not settings.ratings:
        raise InputError("evaluate needs --ratings PATH (held-out ratings)")
    metrics = optional_output(settings.metrics, settings.overwrite, (".json",), "--metrics")
    model = _published_model(settings)
    implicit = model.feedback == "implicit"
    if implicit and not settings.top:
        raise InputError(f"model {model.metrics['version']} learnt implicit feedback: it is judged by its top-N "
                         "lists, so give --top N (e.g. --top 10)")
    heldout = read_ratings(settings.ratings, settings.drop_invalid, column_names(settings), values_optional=implicit)
    if not heldout.shape[2]:
        raise InputError(f"held-out ratings {settings.ratings} hold no rating to evaluate on")
    if settings.top and not (heldout.values >= relevant_threshold(heldout.values, settings.relevant)).any():
        raise InputError(f"no held-out rating in {settings.ratings} reaches --relevant {settings.relevant:g} (the "
                         f"highest is {heldout.values.max():g}): lower --relevant")
    return model, heldout, metrics


def run_evaluate(settings, job_plan, client):
    """RMSE and MAE of an explicit model on held-out ratings; with ``--top N`` (always for an implicit model), the
    ranking metrics of its top-N lists (:func:`ranking_metrics`)."""
    model, heldout, metrics_path = job_plan
    users = model.user_index(heldout.user_ids)[heldout.users]
    items = model.item_index(heldout.item_ids)[heldout.items]
    metrics = {"ratings": len(users), "unknown_users": int((users < 0).sum()),
               "unknown_items": int((items < 0).sum()), "feedback": model.feedback}
    if model.feedback == "explicit":
        residual = heldout.values - model.predict_indices(users, items, settings.clip_predictions)
        metrics.update(residual_errors(residual))
    metrics["clipped"] = settings.clip_predictions and model.rating_range is not None
    if settings.top:
        relevant = relevant_threshold(heldout.values, settings.relevant)
        metrics.update(ranking_metrics(client, model, users, items, heldout.values, top=_capped(settings.top, model),
                                       relevant=relevant, block_users=settings.block_users))
    log.info("evaluate: %s (%s)", ", ".join(f"{k} {v:.6g}" if isinstance(v, float) else f"{k} {v}"
                                            for k, v in metrics.items() if k != "clipped"),
             "predictions clipped to the training range" if metrics["clipped"] else "predictions not clipped")
    if metrics_path is not None:
        with staged_outputs() as stage:
            stage(metrics_path).write_text(json_text(metrics))
    return metrics


def ranking_metrics(client, model, users, items, values, *, top, relevant, block_users):
    """precision@N, recall@N, nDCG@N, MAP@N and coverage@N of the model's top-N lists (:mod:`.ranking`) over the
    known users with at least one relevant held-out item, ranking every item the user has not rated in the model's
    input.

    Parameters
    ----------
    client : distributed.Client or None (in this process)
    model : Model
    users, items : ndarray (n,) int, the held-out pairs' indices in the model (-1: unknown)
    values : ndarray (n,) float64, their values; a pair is relevant when its value is at least ``relevant``
    top, block_users : int
    """
    is_relevant = (values >= relevant) & (users >= 0) & (items >= 0)
    seen = model.has_seen(users, items) & is_relevant
    if seen.any():
        log.warning("evaluate --top: %d relevant held-out pair(s) were in the model's input, so they cannot be "
                    "recommended; they are left out (evaluate on ratings the model was not trained on)", seen.sum())
    is_relevant &= ~seen
    if not is_relevant.any():
        raise InputError("evaluate --top: no relevant held-out pair of a user and an item the model knows is left "
                         "to rank (those in the model's input cannot be recommended): evaluate on ratings the model "
                         "was not trained on")
    f = model.factors
    metrics = pairs_ranking(client, f.user_factors, *f.item_scores(), (model.seen_indptr, model.seen_indices),
                            users[is_relevant], items[is_relevant], top=top, block_users=block_users,
                            name="evaluate-ranking")
    return {**metrics, "relevant_rating": relevant if np.isfinite(relevant) else "every held-out pair"}


def _numbers(values):
    return np.char.mod("%.6g", values)


def _write_csv(path, header, columns):
    """A CSV with a header line; ``columns`` are arrays of equal length (written as text)."""
    import csv

    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(zip(*columns))
