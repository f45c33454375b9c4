"""Models judged on prepared ratings where their shards are (:mod:`mixlib.recsys.dataset`): errors per part,
the bias-only and popularity baselines, ranking metrics, and the comparison with the published model. The kernels
are in :mod:`mixlib.recsys.shards`; each function here runs them as tasks over the shards (or in this process
without a client) and merges their sums in a tree, so the job's process holds the models and per-user or per-item
arrays, never the ratings.
"""

import functools

import numpy as np

from . import shards
from .dataset import PART_NAMES, identity, value_range_of
from .ranking import ranking_means, sample_users


def part_errors(prepared, model, clip):
    """RMSE and MAE of ``model`` (a :class:`mixlib.recsys.store.Model` in the prepared ratings' indices) on each
    part, computed where the shards are: ``{"train": {"rmse", "mae"}, "validation": ..., "test": ...}``, ``{}``
    for a part without ratings."""
    tasks = prepared.tasks
    filled, starts, stops = prepared.spans()
    items, users = model.split_users(starts + stops[-1:])  # each task gets its users' rows only
    shared_users, shared_items = [tasks.shared(rows) for rows in users], [tasks.shared(items)] * len(filled)
    residuals = functools.partial(shards.residual_sums, clip=clip)
    sums = tasks.tree(tasks.zip(residuals, filled, starts, shared_users, shared_items), identity)
    return {name: {} if not sums["count"][n] else
            {"rmse": float(np.sqrt(sums["squares"][n] / sums["count"][n])),
             "mae": float(sums["absolute"][n] / sums["count"][n])} for n, name in enumerate(PART_NAMES)}


def baseline_rmse(prepared, reg_user, reg_item, clip, *, tol=1e-6, max_sweeps=200):
    """Validation RMSE of the bias-only baseline ``mu + b_u + b_i`` fitted on the training ratings, the sweeps of
    :func:`mixlib.recsys.als.fit_baseline` run where the shards are (each shard holds its users' biases; the item
    biases come from sums over the shards, a tree): the same stopping rule, predictions clipped to the training
    range when ``clip``."""
    tasks = prepared.tasks
    filled, starts, stops = prepared.spans()
    totals = tasks.tree(filled, shards.training_total)
    mu = totals["total"] / totals["count"]
    n_items = len(prepared.item_ids)
    counts = tasks.tree(filled, functools.partial(shards.training_item_counts, n_items=n_items))["counts"]
    sweep = functools.partial(shards.baseline_sweep, mu=mu, reg_user=reg_user, n_items=n_items)
    item_bias, previous, results, sweeps = None, None, [None] * len(filled), 0
    while True:  # round r: b_u^r from b_i^r (zeros when r = 0), and the sums that make b_i^(r + 1)
        results = tasks.zip(sweep, filled, starts, stops, results, [tasks.shared(item_bias)] * len(filled))
        stats = tasks.tree(results, _sweep_stats, _sums_and_largest)
        following = stats["items"] / (counts + reg_item)
        if item_bias is not None:
            sweeps += 1
            if max(stats["moved"], float(np.abs(item_bias - previous).max(initial=0))) <= tol or sweeps == max_sweeps:
                break
        previous = np.zeros(n_items) if item_bias is None else item_bias
        item_bias = following
    clip_range = value_range(prepared, (0,)) if clip else None
    residuals = functools.partial(shards.baseline_residuals, mu=mu, value_range=clip_range)
    sums = tasks.tree(tasks.zip(residuals, filled, starts, results, [tasks.shared(item_bias)] * len(filled)), identity)
    return float(np.sqrt(sums["squares"] / sums["count"]))


def _sweep_stats(result):
    return {"items": result["items"], "moved": result["moved"]}


def _sums_and_largest(parts):
    """Merge sweep statistics: the item sums add up, ``moved`` is the largest."""
    return {"items": sum(p["items"] for p in parts), "moved": max(p["moved"] for p in parts)}


def latest_time(prepared):
    """The time of the latest rating (the ratings have times)."""
    tasks = prepared.tasks
    return max(tasks.gather(tasks.map(shards.latest_time, prepared.shards)))


def held_out_counts(prepared, threshold):
    """``(held (2,), relevant (2,))``: the validation and test ratings, and those whose value reaches
    ``threshold``."""
    sums = prepared.tasks.tree(prepared.shards, functools.partial(shards.relevant_counts, threshold=threshold))
    return sums["held"], sums["relevant"]


def value_range(prepared, parts=(0, 1, 2)):
    """The lowest and highest value of the ratings in ``parts``: ``(float, float)``, NaN without any."""
    return value_range_of(prepared.tasks, prepared.shards, parts)


def ranking(prepared, scorer, *, part, threshold, top, block_users):
    """The ranking metrics (:func:`mixlib.recsys.ranking.ranking_means`) of the users with a rating in ``part``
    (1 validation, 2 test) that reaches ``threshold``, each ranking every item outside its training ratings by
    ``scorer`` ``(user_factors (n_users, k), item_factors (n_items, k), item_bias (n_items,))``."""
    tasks = prepared.tasks
    shared = [tasks.shared(scorer)] * len(prepared.shards)
    kernel = functools.partial(shards.shard_ranking, part=part, threshold=threshold, top=top, block_users=block_users)
    sums = tasks.tree(tasks.zip(kernel, prepared.shards, shared), identity)
    return ranking_means(sums, top, len(scorer[1])) if sums["users"] else {"users_ranked": 0}


def popularity_scorer(prepared):
    """The popularity baseline as a scorer for :func:`ranking`: no factors, each item's count of training ratings
    as its bias."""
    n_items = len(prepared.item_ids)
    counts = prepared.tasks.tree(prepared.shards, functools.partial(shards.training_item_counts, n_items=n_items))
    return np.zeros((len(prepared.user_ids), 1)), np.zeros((n_items, 1)), counts["counts"].astype(np.float64)


def validation_sample(prepared, threshold, max_users, seed):
    """The users a ranking validation ranks: ``(ranked (b,), exclude, relevant)`` (:func:`mixlib.recsys.shards.
    ranking_lists`) of a seeded sample of ``max_users`` of the users with a relevant validation rating (all of
    them when there are fewer, or with ``max_users`` 0)."""
    tasks = prepared.tasks
    users = np.concatenate(tasks.gather(tasks.map(functools.partial(shards.relevant_users, part=1,
                                                                    threshold=threshold), prepared.shards)))
    chosen = sample_users(users, max_users, seed) if max_users and len(users) > max_users else None
    lists = tasks.gather(tasks.map(functools.partial(shards.ranking_lists, part=1, threshold=threshold,
                                                     chosen=chosen), prepared.shards))
    return _joined_lists(lists)


def _joined_lists(lists):
    """The :func:`mixlib.recsys.shards.ranking_lists` of consecutive shards as one."""
    ranked = np.concatenate([ranked for ranked, _, _ in lists])
    joined = []
    for which in (1, 2):
        indptrs = [lst[which][0] for lst in lists]
        offsets = np.cumsum([0] + [p[-1] for p in indptrs[:-1]])
        indptr = np.concatenate([[0]] + [p[1:] + o for p, o in zip(indptrs, offsets)])
        joined.append((indptr, np.concatenate([lst[which][1] for lst in lists])))
    return ranked, joined[0], joined[1]


def published_comparison(prepared, new, published, loaded, *, threshold, clip, ranking_top, block_users):
    """``(count, new score, published score)`` on the validation ratings that the ``published`` model never saw
    (:func:`mixlib.recsys.shards.published_pairs`): RMSE of both, or with ``ranking_top = (metric, N)`` that
    ranking metric of both, each model ranking every item outside its own input; the scores are None without
    ratings.

    Parameters
    ----------
    prepared : PreparedRatings
    new : Model, of this run's ratings
    published : Model, of another run, here (its ``seen_indices`` are not needed: its ids make the id maps)
    loaded : the whole published model where the tasks run: a future of a task that loads it, or the Model
    threshold : float, the lowest relevant value; clip : bool; block_users : int
    """
    tasks = prepared.tasks
    n = len(prepared.shards)
    kernel = functools.partial(shards.published_comparison, threshold=threshold, clip=clip,
                               ranking=ranking_top is not None, top=ranking_top and ranking_top[1],
                               block_users=block_users)
    user_map = tasks.shared(published.user_index(prepared.user_ids))
    item_map = tasks.shared(published.item_index(prepared.item_ids))
    sums = tasks.tree(tasks.zip(kernel, prepared.shards, [tasks.shared(new.scorer())] * n, [loaded] * n,
                                [user_map] * n, [item_map] * n), identity)
    count = int(sums["count"])
    if not count:
        return 0, None, None
    if ranking_top is None:
        return count, *(float(np.sqrt(sums[f"{who}_squares"] / count)) for who in ("new", "published"))
    metric, top = ranking_top
    scores = []
    for who, model in (("new", new), ("published", published)):
        own = {key[len(who) + 1:]: value for key, value in sums.items() if key.startswith(f"{who}_")}
        scores.append(ranking_means(own, top, len(model.item_ids))[f"{metric}@{top}"])
    return count, *scores
