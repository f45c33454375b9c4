"""Ranking metrics of top-N lists under the full-ranking protocol, block by block on the workers.

Every user with at least one relevant held-out item is ranked. A user's candidates are all items except those
the user interacted with in training (``exclude``); none are sampled. The top ``N`` candidates by the model's
score ``b_i + p_u . q_i`` (the user's own terms do not change the order) form the list ``L_u``, and with
``rel_u`` the user's relevant items and ``h_k = 1`` when the item at rank ``k`` is relevant::

    precision@N = |L_u ∩ rel_u| / N
    recall@N    = |L_u ∩ rel_u| / |rel_u|
    nDCG@N      = DCG / IDCG,  DCG = sum_{k=1..N} h_k / log2(k + 1),  IDCG = sum_{k=1..min(N, |rel_u|)} 1 / log2(k + 1)
    MAP@N       = sum_{k=1..N} h_k precision@k / min(N, |rel_u|)

each averaged over the ranked users; catalogue coverage is the share of all items that appear in at least one
list. A block's users give sums of the four metrics, a user count and the count of each item in their lists
(:func:`ranking_sums`); the blocks' sums add up in a tree (:func:`mixlib.core.reduce.submit_tree`) and
:func:`ranking_means` turns the total into the metrics.
"""

import functools

import numpy as np

from ..core.reduce import add_stats, local_tree, submit_tree
from .store import rows_of, top_unseen

METRICS = ("precision", "recall", "ndcg", "map")
LABELS = {"precision": "precision", "recall": "recall", "ndcg": "nDCG", "map": "MAP", "coverage": "coverage"}


def parse_metric(text, feedback):
    """``(name, N)`` of a validation metric: ``("rmse", 0)`` or a ranking metric of :data:`METRICS` at N;
    'auto' is rmse for explicit and ndcg@10 for implicit feedback. ValueError saying what is wrong."""
    text = text.strip().lower()
    if text == "auto":
        text = "rmse" if feedback == "explicit" else "ndcg@10"
    if text == "rmse":
        if feedback == "implicit":
            raise ValueError("rmse judges predicted ratings, and an implicit-feedback model ranks items: use a "
                             "ranking metric such as ndcg@10 (or auto)")
        return "rmse", 0
    name, at, top = text.partition("@")
    if name not in METRICS or not at or not top.isdigit() or int(top) < 1:
        raise ValueError(f"unknown metric {text!r}: use rmse, auto, or {', '.join(m + '@N' for m in METRICS)} "
                         "with N >= 1 (e.g. ndcg@10)")
    return name, int(top)


def relevant_threshold(values, relevant):
    """The lowest value of a relevant held-out pair: ``relevant``, or -inf when all ``values (n,)`` are equal (bare
    interactions, whose value says nothing: every held-out pair is relevant)."""
    return -np.inf if len(values) == 0 or np.ptp(values) == 0 else relevant


def metric_label(name, top):
    """How logs and metrics name a metric: 'RMSE', 'nDCG@10'."""
    return "RMSE" if name == "rmse" else f"{LABELS[name]}@{top}"


def ranking_sums(user_factors, exclude, relevant, item_factors, item_bias, top):
    """The summed metrics of a block of users (a kernel).

    Parameters
    ----------
    user_factors : ndarray (b, k)
    exclude : tuple (indptr (b + 1,), indices), CSR of the items each user is not ranked on (training items)
    relevant : tuple (indptr (b + 1,), indices), CSR of each user's relevant items, at least one per user
    item_factors : ndarray (n_items, k); item_bias : ndarray (n_items,)
    top : int, N

    Returns
    -------
    dict: 'users' (b), 'precision', 'recall', 'ndcg', 'map' (sums over the block's users) and 'listed'
    (ndarray (n_items,) int64, how many lists hold each item)
    """
    best, _ = top_unseen(user_factors, *exclude, item_factors, item_bias, top)
    hits = list_hits(best, *relevant, len(item_factors))
    n_relevant = np.diff(relevant[0])
    sums = {"users": len(best), **{name: float(values.sum())
                                   for name, values in zip(METRICS, user_metrics(hits, n_relevant))}}
    sums["listed"] = np.bincount(best[best >= 0], minlength=len(item_factors)).astype(np.int64)
    return sums


def list_hits(best, relevant_indptr, relevant_indices, n_items):
    """Whether each listed item is relevant: bool ``(b, N)`` for lists ``best (b, N)`` (-1 padding) and the
    users' relevant items as CSR."""
    rows = np.repeat(np.arange(len(best), dtype=np.int64), np.diff(relevant_indptr))
    wanted = rows * n_items + relevant_indices
    listed = np.arange(len(best), dtype=np.int64)[:, None] * n_items + best
    return np.isin(listed, wanted) & (best >= 0)


def user_metrics(hits, n_relevant):
    """precision@N, recall@N, nDCG@N and MAP@N ``(b,)`` each of users with hit matrix ``hits (b, N)`` and
    ``n_relevant (b,)`` >= 1 relevant items (the definitions of this module)."""
    top = hits.shape[1]
    discount = 1.0 / np.log2(np.arange(2, top + 2))  # 1 / log2(k + 1), k = 1..N
    found = hits.sum(axis=1)
    ideal = np.cumsum(discount)[np.minimum(n_relevant, top) - 1]
    precision_at_k = np.cumsum(hits, axis=1) / np.arange(1, top + 1)
    return (found / top, found / n_relevant, (hits * discount).sum(axis=1) / ideal,
            (hits * precision_at_k).sum(axis=1) / np.minimum(n_relevant, top))


def ranking_means(sums, top, n_items):
    """The metrics of summed :func:`ranking_sums`: ``{"precision@N": mean, ..., "coverage@N": share of items
    listed, "users_ranked": count}``."""
    users = sums["users"]
    out = {f"{name}@{top}": sums[name] / users for name in METRICS}
    out[f"coverage@{top}"] = float((sums["listed"] > 0).sum() / n_items)
    out["users_ranked"] = int(users)
    return out


def rank_users(client, user_factors, exclude, relevant, item_factors, item_bias, *, top, block_users,
               name="ranking"):
    """The ranking metrics of users over blocks of ``block_users``, on the workers (in this process when
    ``client`` is None).

    Parameters
    ----------
    client : distributed.Client or None
    user_factors : ndarray (n, k), the ranked users
    exclude, relevant : tuple (indptr (n + 1,), indices), CSR per ranked user (:func:`ranking_sums`)
    item_factors : ndarray (n_items, k); item_bias : ndarray (n_items,)
    top, block_users : int
    name : str, the tasks' name on the dashboard

    Returns
    -------
    dict, :func:`ranking_means`; only ``users_ranked`` 0 without users
    """
    if not len(user_factors):
        return {"users_ranked": 0}
    chunk = functools.partial(_block_sums, top=top)

    def blocks(shared):
        out = []
        for start in range(0, len(user_factors), block_users):
            rows = np.arange(start, min(start + block_users, len(user_factors)))
            out.append((user_factors[rows], rows_of(*exclude, rows), rows_of(*relevant, rows), shared))
        return out

    if client is None:
        return ranking_means(local_tree(blocks((item_factors, item_bias)), chunk, add_stats), top, len(item_factors))
    from ..core.cluster import with_rebuilds

    def run(attempt):  # a worker lost while the item arrays are scattered: scatter them again
        shared = client.scatter((item_factors, item_bias), broadcast=True, hash=False)
        return submit_tree(client, blocks(shared), chunk, add_stats, name=name).result()

    sums = with_rebuilds(run, f"ranking ({name})", "give the workers more memory or rank fewer users at a time "
                                                    "(--block-users)")
    return ranking_means(sums, top, len(item_factors))


def by_user(users, items):
    """The distinct ``users`` of pairs ``(users (m,), items (m,))``, sorted, and the CSR ``(indptr, indices)`` of
    each one's items."""
    ranked, first = np.unique(users, return_inverse=True)
    order = np.lexsort((items, first.ravel()))
    counts = np.bincount(first.ravel(), minlength=len(ranked))
    return ranked, (np.append(0, np.cumsum(counts)), np.asarray(items)[order])


class RankingValidation:
    """Judges factors by a ranking metric of their top-N lists on held-out pairs (higher is better), blockwise on
    the workers: each user with a relevant held-out pair ranks every item outside its training ratings.

    Ranking every item for every validation user would cost a large catalogue far more than an ALS step, at every
    evaluation; a seeded sample of the users is ranked (:meth:`from_pairs`,
    :func:`mixlib.recsys.judging.validation_sample`), the same at every evaluation.

    Parameters
    ----------
    metric : str, one of :data:`METRICS`; top : int
    ranked : ndarray (b,) int, the users ranked, ascending
    exclude, relevant : tuple (indptr (b + 1,), indices), CSR of each ranked user's training items and relevant
        held-out items
    block_users : int
    """

    lower_is_better = False

    def __init__(self, metric, top, ranked, exclude, relevant, block_users):
        self.metric, self.top = metric, top
        self.ranked, self.exclude, self.relevant = ranked, exclude, relevant
        self.pairs = int(relevant[0][-1])
        # blocks for both workers of a small cluster, at most block_users each
        self.block_users = max(1, min(block_users, -(-len(self.ranked) // 4)))
        self.name = metric_label(metric, top)

    @classmethod
    def from_pairs(cls, metric, top, train, users, items, block_users, max_users=0, seed=0):
        """The validation of relevant held-out pairs ``(users (m,), items (m,))`` with the training ratings' CSR
        pattern ``train`` (n_users + 1,), (nnz,): a seeded sample of ``max_users`` of their users (all with 0)."""
        ranked = np.unique(users)
        if max_users and len(ranked) > max_users:
            chosen = sample_users(ranked, max_users, seed)
            kept = np.isin(users, chosen)
            users, items = users[kept], items[kept]
        ranked, relevant = by_user(users, items)
        return cls(metric, top, ranked, rows_of(*train, ranked), relevant, block_users)

    def __len__(self):
        return self.pairs

    def __call__(self, client, factors, held_error=None):
        """``(NaN, metric)`` of ``factors`` (:class:`mixlib.recsys.als.StepFactors`, only the ranked users' rows
        fetched; ``held_error``, the validation ratings' squared error, is not used)."""
        user_factors, _ = factors.users.rows(self.ranked)
        metrics = rank_users(client, user_factors, self.exclude, self.relevant,
                             *factors.item_scores(), top=self.top, block_users=self.block_users,
                             name="als-validation")
        return np.nan, metrics[f"{self.metric}@{self.top}"]


def sample_users(ranked, max_users, seed):
    """A seeded sample ``(max_users,)``, ascending, of the users ``ranked`` (ascending, more than ``max_users``)."""
    return np.sort(np.random.default_rng(np.random.SeedSequence([seed, 2])).choice(ranked, max_users, replace=False))


def _block_sums(block, top):
    user_factors, exclude, relevant, (item_factors, item_bias) = block
    return ranking_sums(user_factors, exclude, relevant, item_factors, item_bias, top)
