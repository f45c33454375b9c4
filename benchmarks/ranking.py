"""Top-N ranking benchmark: implicit-mode recommenders scored by nDCG@10 and friends on the same splits.

    python benchmarks/ranking.py --movielens PATH/u.data [--splits 5] [--spark]
        [--synthetic 2000000] [--synthetic-splits 1] [--threshold 4] [--top 10] [--threads 2]

The peers (benchmark-only packages, not dependencies of mixlib): the ``implicit`` library's ALS at its defaults,
Spark MLlib's ALS with ``implicitPrefs=True`` at its defaults (``--spark``; needs pyspark and Java) and a popularity
baseline, beside mixlib's implicit-mode ALS (``Mixlib``: the `train` job's way, from the config with ``--set``
overrides).

Data
    (a) MovieLens 100K ``u.data`` (tab-separated user, item, rating, unix time), passed as a path and never copied
        into the project. Users and items are the ids found in the whole file (943 and 1682).
    (b) ``--synthetic N`` (default 2,000,000; 0 skips): ``structured_interactions`` below, a generated set with
        power-law popularity and activity, taste clusters and ratings that follow taste.

Protocol (``splits``, ``relevant_matrix``, ``ranking_metrics``)
    * Split ``s`` (s = 0, 1, ...): ``np.random.default_rng(s).permutation(n_ratings)``; its first
      ``int(0.8 * n_ratings)`` rows are the training set, the rest the test set. Every method sees the same splits.
    * Every method trains on the training rows as bare interactions (every value 1; each (user, item) pair occurs at
      most once), except rows labelled otherwise (the "ratings as confidence" row).
    * Relevant items of a user: their test items rated >= ``threshold`` (4 by default).
    * Evaluated users: every user with at least one relevant test item.
    * Candidates of a user: every item of the catalogue the user has no training interaction with (full ranking, no
      sampled negatives). Test items that are not relevant stay among the candidates; training items are excluded.
    * Ranking: by score, descending; equal scores are ordered by item index, ascending (the smaller index ranks
      higher). NaN scores count as -inf. A user with fewer than N candidates gets a shorter list.

Metrics, for one user with top-N list i_1..i_N, rel_k = 1 if i_k is relevant else 0, R = number of relevant items:
    precision@N = sum_k rel_k / N
    recall@N    = sum_k rel_k / R
    nDCG@N      = DCG / IDCG, DCG = sum_{k=1..N} rel_k / log2(k + 1), IDCG = sum_{k=1..min(N, R)} 1 / log2(k + 1)
    MAP@N       = (1 / min(N, R)) * sum_{k=1..N} P@k * rel_k, with P@k = sum_{j<=k} rel_j / k
Each is averaged over the evaluated users. Catalogue coverage = |union of the evaluated users' top-N lists| / number
of items. The table shows the mean of each metric over the splits and the median fit seconds over the splits; the
last column is that median over the median of implicit's ALS (defaults, bare interactions).

Peers, each fitted on the split's training CSR (users x items, the orientation ``implicit`` >= 0.5 takes):
    * implicit ALS at its defaults: ``implicit.als.AlternatingLeastSquares(random_state=split, num_threads=threads,
      use_gpu=False)``; in 0.7.3 that is factors=100, regularization=0.01, alpha=1.0, iterations=15, use_cg=True
      (3 CG steps), float32, num_threads=0 (all cores; 2 here, passed explicitly). BLAS is limited to 1 thread
      during the fit (threadpoolctl), as implicit's own warning asks. implicit's confidence is ``alpha * value``
      (not ``1 + alpha * value``), so with bare 1s an interaction weighs as much as a missing pair.
      Scores = user_factors . item_factors over all items, what its ``recommend`` ranks (checked on split 0).
    * The same with the ratings (1..5) as the confidence values: an extra row, labelled so.
    * Spark MLlib ALS, ``implicitPrefs=True``, otherwise its defaults (rank=10, maxIter=10, regParam=0.1 scaled
      by each row's count, alpha=1.0 so confidence 1 + 1 * 1 = 2, numUserBlocks=numItemBlocks=10), seed=split,
      local[threads], driver on 127.0.0.1, UI off. Its factors are collected into numpy and scored here.
    * Popularity: training interaction count of each item, the same for every user (a sanity row).
    * mixlib: ``Mixlib``, implicit feedback with the config's settings: 5% of the training interactions held out
      to choose the step by validation nDCG@10, then the refit on all of them for that many steps, as the `train`
      job does by default; on bare interactions, and with the ratings as values (an extra row).

Fit seconds: implicit, the ``.fit`` call alone; Spark, ``ALS.fit`` plus collecting both factor matrices into numpy
(the JVM's start is reported on its own line, the data's loading into Spark is not counted); popularity, the count;
mixlib, the validation loop and the refit on its embedded cluster (started once, outside the timings).
"""

import argparse
import dataclasses
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent
TOP = 10
THRESHOLD = 4.0


# --------------------------------------------------------------------------------------------- data

@dataclasses.dataclass
class Interactions:
    """One row per (user, item) interaction; users in [0, n_users), items in [0, n_items), each pair at most once."""

    name: str
    users: np.ndarray    # int32
    items: np.ndarray    # int32
    ratings: np.ndarray  # float32
    times: np.ndarray    # int64, unix seconds
    n_users: int
    n_items: int

    def __len__(self):
        return len(self.users)


def read_movielens(path):
    """MovieLens 100K's ``u.data`` (user, item, rating, time; tab-separated) with ids made dense from 0."""
    table = np.loadtxt(path, dtype=np.int64, delimiter="\t", ndmin=2)
    user_ids, users = np.unique(table[:, 0], return_inverse=True)
    item_ids, items = np.unique(table[:, 1], return_inverse=True)
    pairs = users.astype(np.int64) * len(item_ids) + items
    if len(np.unique(pairs)) != len(pairs):
        raise ValueError(f"{path}: a (user, item) pair occurs more than once")
    return Interactions(f"MovieLens ({Path(path).name})", users.astype(np.int32), items.astype(np.int32),
                        table[:, 2].astype(np.float32), table[:, 3], len(user_ids), len(item_ids))


def structured_interactions(n_users, n_items, n_interactions, seed=0, n_genres=24):
    """A synthetic implicit-feedback set with the structure of real ones, as ``Interactions``.

    * Items: each has one genre (genre sizes uneven, Dirichlet shares) and a popularity weight from a Zipf law over
      a random order of the items (weight of the r-th most popular ~ 1 / r^0.9; an item's index says nothing of its
      popularity, so index-ordered tie-breaking favours no one), and a latent quality that rises with popularity.
    * Users: activity (number of interactions) from a Pareto law (at least 5, at most a third of the catalogue);
      taste = 1 + Poisson(1.2) genres (popular genres likelier) with Dirichlet(1) weights, and a mainstream
      share (Beta(2, 5)) of their interactions that follows global popularity instead of taste.
    * Interactions: each draw is either mainstream (an item by global popularity) or a genre by the user's taste and
      an item of that genre by popularity; repeated (user, item) pairs are dropped, and draws continue until there
      are ``n_interactions`` distinct pairs.
    * Ratings 1..5: rounded 2.8 + 0.9 * (user bias + item quality + 1.2 * taste match + noise), clipped; taste
      match = the user's weight of the item's genre over their largest weight, minus 0.4 (mainstream picks outside
      their genres rate lower). The mean rating is about 3.5 and about half are >= 4, near MovieLens 100K's.
    * Times: each user joins at a uniform time over three years from 2015 and stays for an exponential span
      (mean 120 days, longer for more active users, cut at the end); their interactions are spread uniformly
      over it.
    """
    rng = np.random.default_rng(seed)
    if n_interactions > n_users * n_items // 2:
        raise ValueError("too many interactions for the catalogue: at most half of all (user, item) pairs")
    genre_share = rng.dirichlet(np.full(n_genres, 2.0))
    genre = rng.choice(n_genres, n_items, p=genre_share).astype(np.int32)
    rank = rng.permutation(n_items) + 1
    popularity = 1.0 / rank ** 0.9
    log_pop = np.log(popularity)
    quality = 0.4 * (log_pop - log_pop.mean()) / log_pop.std() + rng.normal(0, 0.6, n_items)

    raw = rng.pareto(1.3, n_users) + 1.0
    activity = 5 + raw / raw.sum() * max(n_interactions - 5 * n_users, 0)
    activity = np.minimum(activity, n_items // 3)
    n_tastes = np.minimum(1 + rng.poisson(1.2, n_users), n_genres)
    # n_tastes[u] genres without replacement, popular genres likelier (Gumbel top-k), with Dirichlet(1) weights
    keys = np.log(genre_share) + rng.gumbel(size=(n_users, n_genres))
    chosen = np.argsort(np.argsort(-keys, axis=1), axis=1) < n_tastes[:, None]
    taste = np.where(chosen, rng.exponential(size=(n_users, n_genres)), 0.0)
    taste /= taste.sum(axis=1, keepdims=True)
    mainstream = rng.beta(2.0, 5.0, n_users)
    user_bias = rng.normal(0, 0.5, n_users)

    # inverse-CDF sampling on flat cumulative tables: row r's cumulative weights are shifted into (r, r + 1]
    taste_cdf = (np.cumsum(taste, axis=1) + np.arange(n_users)[:, None]).ravel()
    taste_cdf[n_genres - 1::n_genres] = np.arange(1, n_users + 1)  # exact ends despite rounding
    by_genre = np.lexsort((np.arange(n_items), genre))
    genre_total = np.bincount(genre, weights=popularity, minlength=n_genres)
    genre_cdf = genre[by_genre] + np.cumsum(popularity[by_genre]) - np.concatenate(
        [[0.0], np.cumsum(genre_total)])[genre[by_genre]]
    ends = np.flatnonzero(np.diff(np.append(genre[by_genre], n_genres)))  # the last item of each genre
    genre_cdf[ends] = genre[by_genre][ends] + 1
    global_cdf = np.cumsum(popularity) / popularity.sum()
    global_cdf[-1] = 1.0

    pairs = np.zeros(0, np.int64)
    share = activity / activity.sum()
    while len(pairs) < n_interactions:
        missing = n_interactions - len(pairs)
        counts = rng.poisson(share * missing * 1.3 + 0.05)
        owner = np.repeat(np.arange(n_users), counts)
        n = len(owner)
        picked_genre = np.minimum(np.searchsorted(taste_cdf, owner + rng.random(n), side="left"),
                                  len(taste_cdf) - 1) % n_genres
        in_genre = by_genre[np.minimum(np.searchsorted(genre_cdf, picked_genre + rng.random(n), side="left"),
                                       n_items - 1)]
        everywhere = np.minimum(np.searchsorted(global_cdf, rng.random(n), side="left"), n_items - 1)
        item = np.where(rng.random(n) < mainstream[owner], everywhere, in_genre)
        pairs = np.unique(np.concatenate([pairs, owner.astype(np.int64) * n_items + item]))
    pairs = np.sort(rng.choice(pairs, n_interactions, replace=False))
    users, items = (pairs // n_items).astype(np.int32), (pairs % n_items).astype(np.int32)

    match = taste[users, genre[items]] / taste.max(axis=1)[users] - 0.4
    z = user_bias[users] + quality[items] + 1.2 * match + rng.normal(0, 0.7, len(users))
    ratings = np.clip(np.rint(2.8 + 0.9 * z), 1, 5).astype(np.float32)

    start, span = 1_420_070_400, 3 * 365 * 86400
    joined = rng.uniform(0, span, n_users)
    stays = np.minimum(rng.exponential(120 * 86400, n_users) * np.sqrt(activity / activity.mean()), span - joined)
    times = (start + joined[users] + rng.random(len(users)) * stays[users]).astype(np.int64)
    return Interactions(f"synthetic ({n_interactions} interactions)", users, items, ratings, times, n_users, n_items)


# ----------------------------------------------------------------------------------------- protocol

def splits(n_ratings, n_splits, train_share=0.8):
    """Yield ``(seed, train_rows, test_rows)`` for seeds 0..n_splits-1: seeded permutation, first 80% train."""
    for seed in range(n_splits):
        order = np.random.default_rng(seed).permutation(n_ratings)
        cut = int(train_share * n_ratings)
        yield seed, np.sort(order[:cut]), np.sort(order[cut:])


def interaction_matrix(data, rows, values="ones"):
    """CSR (n_users x n_items), float32, of the interactions in ``rows``: every value 1 (``"ones"``) or the ratings
    (``"ratings"``)."""
    weights = np.ones(len(rows), np.float32) if values == "ones" else data.ratings[rows].astype(np.float32)
    matrix = sp.csr_matrix((weights, (data.users[rows], data.items[rows])), shape=(data.n_users, data.n_items))
    matrix.sort_indices()
    return matrix


def relevant_matrix(data, test_rows, threshold=THRESHOLD):
    """CSR (n_users x n_items), bool: the test interactions rated >= ``threshold``."""
    rows = test_rows[data.ratings[test_rows] >= threshold]
    matrix = sp.csr_matrix((np.ones(len(rows), bool), (data.users[rows], data.items[rows])),
                           shape=(data.n_users, data.n_items))
    matrix.sort_indices()
    return matrix


def top_items(scores, top):
    """Indices of each row's ``top`` highest scores (descending; ties by item index ascending; -1 pads a row with
    fewer finite scores). ``scores`` is overwritten (NaN -> -inf)."""
    n_rows, n_items = scores.shape
    k = min(top, n_items)
    scores[np.isnan(scores)] = -np.inf
    rows = np.arange(n_rows)[:, None]
    chosen = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    kth = scores[rows, chosen].min(axis=1)
    # argpartition picks arbitrarily among scores equal to the k-th: in those rows take every score above it and
    # the first of the tied ones by item index
    redo = np.flatnonzero((scores >= kth[:, None]).sum(axis=1) > k)
    if len(redo):
        part, cut = scores[redo], kth[redo, None]
        tied = part == cut
        wanted = (part > cut) | (tied & (np.cumsum(tied, axis=1) <= k - (part > cut).sum(axis=1, keepdims=True)))
        chosen[redo] = np.nonzero(wanted)[1].reshape(len(redo), k)
    order = np.lexsort((chosen, -scores[rows, chosen]), axis=1)
    chosen = np.take_along_axis(chosen, order, axis=1)
    chosen[~np.isfinite(scores[rows, chosen])] = -1
    if k < top:
        chosen = np.hstack([chosen, np.full((n_rows, top - k), -1, chosen.dtype)])
    return chosen


def ranking_metrics(scores, train, relevant, top=TOP, block=1024):
    """Mean precision@top, recall@top, nDCG@top, MAP@top over the evaluated users, and catalogue coverage.

    ``scores``: an (n_users, n_items) array, or a callable ``f(users) -> (len(users), n_items) array`` for a block of
    user indices. ``train``: CSR (n_users x n_items) of training interactions (excluded from the ranking);
    ``relevant``: CSR of relevant test items. Users with no relevant item are not evaluated. See the module
    docstring for the definitions and the tie rule."""
    train, relevant = sp.csr_matrix(train), sp.csr_matrix(relevant, dtype=bool)
    n_items = train.shape[1]
    n_relevant = np.diff(relevant.indptr)
    evaluated = np.flatnonzero(n_relevant > 0)
    discount = 1.0 / np.log2(np.arange(2, top + 2))
    ideal = np.cumsum(discount)
    sums = dict.fromkeys(["precision", "recall", "ndcg", "map"], 0.0)
    shown = np.zeros(n_items, bool)
    for start in range(0, len(evaluated), block):
        users = evaluated[start:start + block]
        got = scores(users) if callable(scores) else scores[users]
        got = np.array(got, dtype=np.result_type(np.asarray(got).dtype, np.float32), copy=True)
        if got.shape != (len(users), n_items):
            raise ValueError(f"scores for {len(users)} users have shape {got.shape}, not {(len(users), n_items)}")
        seen = train[users]
        got[np.repeat(np.arange(len(users)), np.diff(seen.indptr)), seen.indices] = -np.inf
        ranked = top_items(got, top)
        shown[ranked[ranked >= 0]] = True
        hits = np.asarray(relevant[users].toarray()[np.arange(len(users))[:, None], np.maximum(ranked, 0)]
                          & (ranked >= 0), dtype=float)
        r = n_relevant[users]
        cut = np.minimum(r, top)
        n_hits = hits.sum(axis=1)
        sums["precision"] += (n_hits / top).sum()
        sums["recall"] += (n_hits / r).sum()
        sums["ndcg"] += ((hits * discount).sum(axis=1) / ideal[cut - 1]).sum()
        precision_at = np.cumsum(hits, axis=1) / np.arange(1, top + 1)
        sums["map"] += ((precision_at * hits).sum(axis=1) / cut).sum()
    result = {name: value / max(len(evaluated), 1) for name, value in sums.items()}
    result["coverage"] = shown.sum() / n_items
    result["users"] = len(evaluated)
    return result


def factor_scorer(user_factors, item_factors):
    """Score function of a factor model: ``users -> user_factors[users] @ item_factors.T``."""
    user_factors, item_factors = np.asarray(user_factors), np.asarray(item_factors)
    return lambda users: user_factors[users] @ item_factors.T


# -------------------------------------------------------------------------------------------- peers

def implicit_settings(model):
    """The fitted-or-not implicit model's hyperparameters, as text."""
    names = ["factors", "regularization", "alpha", "iterations", "use_cg", "use_native", "dtype", "num_threads"]
    return ", ".join(f"{n}={getattr(model, n)}" for n in names if hasattr(model, n))


def fit_implicit(train, seed, threads=2):
    """The ``implicit`` library's ALS at its defaults (CPU model; ``random_state=seed``, ``num_threads=threads``;
    BLAS at 1 thread during fit, as implicit itself asks) on the user x item CSR ``train`` as given.

    Returns ``(fit_seconds, score function, model)``; fit seconds are the ``.fit`` call alone."""
    import implicit.als
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):
        model = implicit.als.AlternatingLeastSquares(random_state=seed, num_threads=threads, use_gpu=False)
        started = time.perf_counter()
        model.fit(train, show_progress=False)
        seconds = time.perf_counter() - started
    if model.user_factors.shape[0] != train.shape[0] or model.item_factors.shape[0] != train.shape[1]:
        raise RuntimeError(f"implicit's factors {model.user_factors.shape}, {model.item_factors.shape} do not "
                           f"match the user x item matrix {train.shape}")
    return seconds, factor_scorer(model.user_factors, model.item_factors), model


def implicit_agreement(model, train, users, top=TOP):
    """Share of ``users`` whose top lists from implicit's own ``recommend`` (already-liked items filtered) equal
    this module's (user factors . item factors, training items excluded): a check of orientation and exclusion."""
    ids, _ = model.recommend(users, train[users], N=top, filter_already_liked_items=True)
    scores = factor_scorer(model.user_factors, model.item_factors)(users).astype(np.float32)
    seen = train[users]
    scores[np.repeat(np.arange(len(users)), np.diff(seen.indptr)), seen.indices] = -np.inf
    ours = top_items(scores, top)
    same_sets = np.mean([set(a) == set(b) for a, b in zip(ids.tolist(), ours.tolist())])
    return float(np.mean((ids == ours).all(axis=1))), float(same_sets)


def fit_popularity(train):
    """Items by training interaction count (the same list for every user, training items excluded later)."""
    started = time.perf_counter()
    counts = np.bincount(train.indices, minlength=train.shape[1]).astype(np.float64)
    seconds = time.perf_counter() - started
    return seconds, lambda users: np.broadcast_to(counts, (len(users), len(counts)))


class SparkALS:
    """Spark MLlib's ALS, ``implicitPrefs=True`` and otherwise its defaults, in a local[threads] session.

    ``start_seconds`` is the JVM's and session's start. ``fit`` loads the interactions (values 1) through a Parquet
    file (not timed), then times ``ALS.fit`` plus collecting both factor tables into numpy. Users or items without
    factors (none in training) get zero vectors, so score 0."""

    def __init__(self, threads=2, memory="6g"):
        from pyspark.sql import SparkSession

        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # loopback only, also for Spark's own address look-up
        started = time.perf_counter()
        self.spark = (SparkSession.builder.master(f"local[{threads}]").appName("mixlib-ranking-benchmark")
                      .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
                      .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
                      .config("spark.driver.memory", memory).getOrCreate())
        self.spark.sparkContext.setLogLevel("ERROR")
        self.spark.range(1).count()
        self.start_seconds = time.perf_counter() - started
        self.folder = Path(tempfile.mkdtemp(prefix="ranking-spark-"))

    def defaults(self):
        from pyspark.ml.recommendation import ALS

        als = ALS()
        names = ["rank", "maxIter", "regParam", "alpha", "implicitPrefs", "nonnegative", "numUserBlocks",
                 "numItemBlocks", "checkpointInterval"]
        return ", ".join(f"{n}={als.getOrDefault(n)}" for n in names)

    def fit(self, train, seed):
        import pyarrow as pa
        import pyarrow.parquet as pq
        from pyspark.ml.recommendation import ALS

        coo = train.tocoo()
        path = self.folder / f"train-{seed}.parquet"
        pq.write_table(pa.table({"user": coo.row.astype(np.int32), "item": coo.col.astype(np.int32),
                                 "rating": np.ones(coo.nnz, np.float32)}), path)
        frame = self.spark.read.parquet(str(path)).cache()
        frame.count()
        try:
            estimator = ALS(implicitPrefs=True, userCol="user", itemCol="item", ratingCol="rating", seed=seed)
            started = time.perf_counter()
            model = estimator.fit(frame)
            user_factors = self._collect(model.userFactors, train.shape[0], model.rank)
            item_factors = self._collect(model.itemFactors, train.shape[1], model.rank)
            seconds = time.perf_counter() - started
        finally:
            frame.unpersist()
        return seconds, factor_scorer(user_factors, item_factors)

    @staticmethod
    def _collect(frame, n, rank):
        rows = frame.collect()
        factors = np.zeros((n, rank), np.float32)
        factors[np.array([r[0] for r in rows], int)] = np.array([r[1] for r in rows], np.float32).reshape(-1, rank)
        return factors

    def stop(self):
        self.spark.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


# ------------------------------------------------------------------------------------- mixlib hook

class Mixlib:
    """mixlib's implicit-mode ALS as its `train` job runs it (the config's settings, --feedback implicit): 5% of the
    training interactions held out to choose the step by validation nDCG@10, then the refit on all of them for
    that many steps; in this process up to ``local_ratings`` interactions, else on the embedded cluster
    (``threads`` single-threaded workers), which starts once, outside the timings, as numba's start and the load of
    the compiled loop do."""

    def __init__(self, threads, config, overrides):
        import contextlib

        sys.path.insert(0, str(ROOT))
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from recommend import settings_from

        from mixlib.core.cluster import connect

        self.settings = settings_from(config, ["feedback=implicit", "log_level=warning",  # whatever the config
                                               "dashboard_address=127.0.0.1:0", f"workers={threads}", *overrides])
        self.stack = contextlib.ExitStack()
        self.client = self.stack.enter_context(connect(self.settings))
        from mixlib.recsys.compiled import implicit_rows

        # numba's start and the compiled loop's load (from its cache), as implicit's import, outside the timings
        implicit_rows(np.zeros(2, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros((1, 1)), np.eye(1), 1.0,
                      np.ones(1))

    def describe(self):
        s = self.settings
        return (f"rank {s.rank}, lambda {s.reg_lambda} x count^{s.lambda_exponent if s.weighted_lambda else 0}, "
                f"alpha {s.alpha}, init {s.init}, validation {s.validation}, patience {s.patience}, refit {s.refit}")

    def fit(self, data, train_rows, seed, values):
        """``(seconds, factor scorer)`` of a fit on the training interactions ``train_rows`` (``values``: "ones"
        or "ratings")."""
        from mixlib.recsys import als, train
        from mixlib.recsys.ranking import RankingValidation
        from mixlib.recsys.ratings import Ratings, split
        from mixlib.recsys.settings import als_params

        s = self.settings
        started = time.perf_counter()
        weights = np.ones(len(train_rows)) if values == "ones" else data.ratings[train_rows].astype(np.float64)
        ratings = Ratings(data.users[train_rows].astype(np.int64), data.items[train_rows].astype(np.int64), weights,
                          np.arange(data.n_users), np.arange(data.n_items))
        inner, held, _ = split(len(train_rows), s.validation, 0, seed)
        params = als_params(s)
        data_split = train.training_data(ratings, {"train": inner, "validation": held}, np.zeros(data.n_users),
                                         False, "implicit")
        relevant = held[ratings.values[held] >= (s.relevant if values == "ratings" else -np.inf)]
        validation = RankingValidation.from_pairs("ndcg", TOP, (data_split.matrix.indptr, data_split.matrix.indices),
                                                  ratings.users[relevant], ratings.items[relevant], s.block_users,
                                                  s.validation_users, seed)
        client = None if len(train_rows) <= s.local_ratings else self.client
        final, _ = als.fit_als(client, data_split, params, self._start(data_split, params, seed),
                               validation=validation)
        factors = final.best.here()
        if s.refit and final.best_step > 0:
            every = train.training_data(ratings, {"train": np.arange(len(train_rows)), "validation": held[:0]},
                                        np.zeros(data.n_users), False, "implicit")
            steps = final.best_step
            refit_params = dataclasses.replace(params, max_steps=steps, eval_every=steps, log_every=steps)
            factors = als.fit_als(client, every, refit_params, self._start(every, refit_params, seed))[0].current.here()
        seconds = time.perf_counter() - started
        return seconds, factor_scorer(factors.user_factors, factors.item_factors), final.best_step

    @staticmethod
    def _start(data, params, seed):
        from mixlib.recsys import als

        rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
        return als.TrainingState.start(*als.initial_items(data, params, rng))

    def stop(self):
        self.stack.close()


def mixlib_rows(mixlib, data, train_rows, seed):
    """mixlib's rows of one split: bare interactions (the peers' input) and ratings as values."""
    rows = []
    for values, label in (("ones", "mixlib implicit ALS, config"), ("ratings", "mixlib implicit ALS, value = rating")):
        seconds, scores, _ = mixlib.fit(data, train_rows, seed, values)
        rows.append((label, seconds, scores))
    return rows


# ------------------------------------------------------------------------------------------ running

IMPLICIT = "implicit ALS, defaults"


def run(data, n_splits, threshold=THRESHOLD, top=TOP, threads=2, spark=None, check=True, mixlib=None):
    """All methods on ``n_splits`` splits of ``data``: {label: ([metric dicts], [fit seconds])}."""
    results = {}

    def record(label, seconds, scores, relevant, train):
        started = time.perf_counter()
        metrics = ranking_metrics(scores, train, relevant, top)
        results.setdefault(label, ([], []))
        results[label][0].append(metrics)
        results[label][1].append(seconds)
        print(f"    {label:44s} nDCG@{top} {metrics['ndcg']:.4f}  P@{top} {metrics['precision']:.4f}  "
              f"fit {seconds:7.2f} s  (scored in {time.perf_counter() - started:.1f} s)", flush=True)

    for seed, train_rows, test_rows in splits(len(data), n_splits):
        train = interaction_matrix(data, train_rows, "ones")
        relevant = relevant_matrix(data, test_rows, threshold)
        print(f"  split {seed}: {train.nnz} training interactions, {int((np.diff(relevant.indptr) > 0).sum())} "
              f"users evaluated, {relevant.nnz} relevant test items", flush=True)
        seconds, scores, model = fit_implicit(train, seed, threads)
        if seed == 0:
            print(f"    implicit ALS settings: {implicit_settings(model)}")
        if check and seed == 0:
            users = np.arange(min(200, data.n_users))
            exact, same = implicit_agreement(model, train, users, top)
            print(f"    check: implicit's own recommend() and this module's ranking agree on {exact:.0%} of "
                  f"{len(users)} users' top-{top} lists in order ({same:.0%} as sets)")
        record(IMPLICIT, seconds, scores, relevant, train)
        del model, scores
        seconds, scores, _ = fit_implicit(interaction_matrix(data, train_rows, "ratings"), seed, threads)
        record("implicit ALS, defaults, confidence = rating", seconds, scores, relevant, train)
        if spark is not None:
            seconds, scores = spark.fit(train, seed)
            record("Spark MLlib ALS, implicitPrefs, defaults", seconds, scores, relevant, train)
        seconds, scores = fit_popularity(train)
        record("popularity (training counts)", seconds, scores, relevant, train)
        if mixlib is not None:
            for label, seconds, scores in mixlib_rows(mixlib, data, train_rows, seed):
                record(label, seconds, scores, relevant, train)
    return results


def table(results, title, top=TOP):
    """The results as text: mean metrics over splits, median fit seconds, and that over implicit's."""
    reference = statistics.median(results[IMPLICIT][1]) if IMPLICIT in results else float("nan")
    header = (f"  {'method':44s} {f'nDCG@{top}':>8s} {f'P@{top}':>7s} {f'R@{top}':>7s} {f'MAP@{top}':>7s} "
              f"{'coverage':>8s} {'fit s':>8s} {'/implicit':>9s}")
    lines = [title, header]
    for label, (metrics, seconds) in results.items():
        mean = {k: np.mean([m[k] for m in metrics]) for k in ("ndcg", "precision", "recall", "map", "coverage")}
        median = statistics.median(seconds)
        lines.append(f"  {label:44s} {mean['ndcg']:8.4f} {mean['precision']:7.4f} {mean['recall']:7.4f} "
                     f"{mean['map']:7.4f} {mean['coverage']:8.3f} {median:8.2f} {median / reference:9.2f}")
    if IMPLICIT in results and len(results[IMPLICIT][0]) > 1:
        spread = np.std([m["ndcg"] for m in results[IMPLICIT][0]])
        lines.append(f"  (standard deviation of implicit's nDCG@{top} over the splits: {spread:.4f})")
    return "\n".join(lines)


class OtherWork:
    """CPU used by processes outside this one and its children (the JVM) since creation, in cores on average:
    whether the fit seconds were measured on a quiet machine."""

    def __init__(self):
        import psutil

        self.process, self.started = psutil.Process(), time.perf_counter()
        self.busy, self.own = self._busy(), self._own()

    @staticmethod
    def _busy():
        import psutil

        t = psutil.cpu_times()
        return t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0)

    def _own(self):
        import psutil

        total = 0.0
        for p in [self.process, *self.process.children(recursive=True)]:
            try:
                t = p.cpu_times()
            except psutil.NoSuchProcess:  # a child that ended meanwhile
                continue
            total += t.user + t.system + t.children_user + t.children_system
        return total

    def cores(self):
        other = (self._busy() - self.busy) - (self._own() - self.own)
        return max(other, 0.0) / (time.perf_counter() - self.started)


def describe(data):
    per_user = np.bincount(data.users, minlength=data.n_users)
    per_item = np.bincount(data.items, minlength=data.n_items)
    shares = np.bincount(np.rint(data.ratings).astype(int), minlength=6)[1:] / len(data)
    return (f"{len(data)} interactions, {data.n_users} users, {data.n_items} items; per user median "
            f"{np.median(per_user):.0f}, max {per_user.max()}; per item median {np.median(per_item):.0f}, max "
            f"{per_item.max()}; ratings 1..5: " + " ".join(f"{s:.0%}" for s in shares))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--movielens", type=Path, help="MovieLens 100K u.data (tab-separated)")
    parser.add_argument("--splits", type=int, default=5, help="random 80/20 splits of MovieLens (seeds 0..)")
    parser.add_argument("--synthetic", type=int, default=2_000_000, help="interactions of the synthetic set (0: skip)")
    parser.add_argument("--synthetic-splits", type=int, default=1, help="splits of the synthetic set")
    parser.add_argument("--spark", action="store_true", help="also Spark MLlib's ALS (pyspark and Java needed)")
    parser.add_argument("--threshold", type=float, default=THRESHOLD, help="relevant: test rating >= this")
    parser.add_argument("--top", type=int, default=TOP, help="N of the @N metrics")
    parser.add_argument("--threads", type=int, default=2, help="threads for every method")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "recommender-implicit.toml",
                        help="mixlib's config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a mixlib key")
    parser.add_argument("--no-mixlib", action="store_true", help="the peers only")
    args = parser.parse_args(argv)

    sets = []
    if args.movielens:
        sets.append((lambda: read_movielens(args.movielens), args.splits))
    if args.synthetic:
        n = args.synthetic
        sets.append((lambda: structured_interactions(n // 40, max(1000, n // 200), n, seed=0), args.synthetic_splits))
    if not sets:
        parser.error("nothing to run: give --movielens PATH and/or --synthetic N")

    spark = None
    if args.spark:
        spark = SparkALS(args.threads)
        print(f"Spark: JVM and session started in {spark.start_seconds:.1f} s (not in the fit times); ALS defaults "
              f"{spark.defaults()}; run with implicitPrefs=True, seed=split", flush=True)
    mixlib = None if args.no_mixlib else Mixlib(args.threads, args.config, args.set)
    if mixlib is not None:
        print(f"mixlib: {mixlib.describe()}; cluster of {args.threads} workers started outside the timings")
    tables = []
    try:
        for load, n_splits in sets:
            started = time.perf_counter()
            data = load()
            print(f"\n{data.name}: {describe(data)} (loaded in {time.perf_counter() - started:.1f} s)", flush=True)
            others = OtherWork()
            results = run(data, n_splits, args.threshold, args.top, args.threads, spark, mixlib=mixlib)
            tables.append(table(results, f"\n{data.name}: {n_splits} random 80/20 split(s); relevant = test rating "
                                         f">= {args.threshold:g}; all unseen items ranked; {args.threads} threads "
                                         f"each; other processes used {others.cores():.2f} of the machine's "
                                         f"{os.cpu_count()} cores meanwhile (above 0 the seconds are inflated)"))
            print(tables[-1], flush=True)
    finally:
        if spark is not None:
            spark.stop()
        if mixlib is not None:
            mixlib.stop()
    print("\n" + "\n".join(tables))


if __name__ == "__main__":
    sys.exit(main())
