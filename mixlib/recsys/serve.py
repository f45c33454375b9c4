"""Serving the published model: ``python -m jobs.recommend predict``, ``recommend`` and ``evaluate``."""

import logging

import numpy as np

from ..core.errors import InputError
from ..core.outputs import json_text, optional_output, staged_outputs
from .ranking import pairs_ranking, relevant_threshold
from .ratings import read_id_columns, read_ratings
from .settings import column_names
from .store import ModelStore, residual_errors, rows_of, top_unseen

log = logging.getLogger("mixlib")


def plan_predict(settings):
    if not settings.pairs or not settings.out:
        raise InputError("predict needs --pairs PATH and --out PATH.csv")
    out = optional_output(settings.out, settings.overwrite, (".csv",), "--out")
    users, items = read_id_columns(settings.pairs, ("user", "item"), column_names(settings))
    return _published_model(settings), users, items, out


def _published_model(settings):
    """The published model; says when its predictions cannot be clipped as ``clip_predictions`` asks."""
    model = ModelStore(settings.model_dir).load()
    if settings.clip_predictions and model.rating_range is None and model.feedback == "explicit":
        log.info("model %s was stored without its training rating range: its predictions are not clipped "
                 "(train a new version to clip them)", model.metrics["version"])
    return model


def predict_runs_here(settings, job_plan):
    """predict always runs in this process (:func:`mixlib.core.cli.job_main` asks): it looks up factors and biases,
    which no cluster would make faster."""
    return True


def recommend_runs_here(settings, job_plan):
    """recommend runs in this process when its users fit one block of ``--block-users`` (one task's work)."""
    return len(job_plan[1]) <= settings.block_users


def evaluate_runs_here(settings, job_plan):
    """evaluate runs in this process when the users it ranks (with ``--top``) fit one block of ``--block-users``."""
    return len(np.unique(job_plan[1].users)) <= settings.block_users


def run_predict(settings, job_plan, client):
    """Write user,item,prediction for every requested pair."""
    model, users, items, out = job_plan
    user_index, item_index = model.user_index(users), model.item_index(items)
    predictions = model.predict_indices(user_index, item_index, settings.clip_predictions)
    log.info("%d pairs: %d with an unknown user, %d with an unknown item (predicted from the biases)",
             len(users), (user_index < 0).sum(), (item_index < 0).sum())
    with staged_outputs() as stage:
        _write_csv(stage(out), ("user", "item", "prediction"), [users, items, _numbers(predictions)])


def plan_recommend(settings):
    if not settings.out:
        raise InputError("recommend needs --out PATH.csv")
    out = optional_output(settings.out, settings.overwrite, (".csv",), "--out")
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


def run_recommend(settings, job_plan, client):
    """Write the top-N unseen items of each user (unknown users: the items with the highest bias, or the most
    popular ones for an implicit model, which has no biases)."""
    model, users, out = job_plan
    index = model.user_index(users)
    top = _capped(settings.top, model)
    fallback = "the top items by bias" if model.feedback == "explicit" else "the most popular items"
    log.info("recommending %d items to %d users (%d unknown: %s)", top, len(users), (index < 0).sum(), fallback)
    items, scores = top_items(client, model, index, top, settings.block_users)
    scores = model.clip(scores, settings.clip_predictions)  # ranked unclipped: clipping would make ties
    ranks = np.broadcast_to(np.arange(1, top + 1), items.shape)
    present = items >= 0
    rows = np.repeat(np.asarray(users), top).reshape(items.shape)
    with staged_outputs() as stage:
        _write_csv(stage(out), ("user", "rank", "item", "score"),
                   [rows[present], ranks[present], model.item_ids[items[present]], _numbers(scores[present])])


def _capped(top, model):
    """``top``, or the model's item count when it has fewer items (a list never holds more)."""
    if top > len(model.item_ids):
        log.info("--top %d: the model knows %d items, so the lists hold at most that many", top, len(model.item_ids))
    return min(top, len(model.item_ids))


def top_items(client, model, users, top, block_users):
    """The top-``top`` unseen items ``(n, top)`` (-1 padding) and their predictions for user indices ``(n,)``
    (-1: unknown), scored block by block on the workers (in this process when ``client`` is None). An implicit
    model's unknown users get the items most often in its input (it has no biases to rank by)."""
    f = model.factors
    shared = (f.item_factors, f.item_bias)
    if client is not None:
        shared = client.scatter(shared, broadcast=True, hash=False)
    parts = []
    for number, start in enumerate(range(0, len(users), block_users)):
        block = users[start:start + block_users]
        indptr, indices = rows_of(model.seen_indptr, model.seen_indices, block)
        factors = np.where((block >= 0)[:, None], f.user_factors[np.maximum(block, 0)], 0.0)
        parts.append(_top_block(factors, indptr, indices, shared, top) if client is None else
                     client.submit(_top_block, factors, indptr, indices, shared, top, pure=False,
                                   key=f"recommend-top-{number}"))
    if client is not None:
        parts = client.gather(parts)
    items = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, top), np.int64)
    scores = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, top))
    offset = model.mu + np.where(users >= 0, f.user_bias[np.maximum(users, 0)] + model.user_means[np.maximum(users, 0)],
                                 0.0)
    unknown = users < 0
    if model.feedback == "implicit" and unknown.any():
        popularity = np.bincount(model.seen_indices, minlength=len(model.item_ids))
        items[unknown] = np.argsort(-popularity, kind="stable")[:top]
        scores[unknown] = 0.0  # no factors: the model's preference score is 0
    return items, scores + offset[:, None]


def _top_block(user_factors, seen_indptr, seen_indices, shared, top):
    return top_unseen(user_factors, seen_indptr, seen_indices, *shared, top)


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
