"""The recommender's settings: the keys of ``configs/recommender.toml`` and the flags of ``python -m jobs.recommend``
(train, predict, recommend, evaluate), with their help text. The library modules take plain values."""

import dataclasses
import functools

from ..core.cli import JobOptions
from ..core.config import option
from .als import ALSParams
from .ratings import OPTIONAL_ROLES, ROLES


@dataclasses.dataclass(frozen=True)
class ServingOptions(JobOptions):
    """What every recommender command shares."""

    model_dir: str = option("models/recommender", "the model store: versions/ and the 'latest' pointer",
                            group="input and output")
    clip_predictions: bool = option(True, "clip predictions (and the errors and scores computed from them) to the "
                                          "range of the ratings the model was trained on", group="model")


@dataclasses.dataclass(frozen=True)
class UserColumn:
    """The user column's header name in input files."""

    user_col: str = option("", "header name of the user column ('' for user, userId or user_id, any case)",
                           group="input and output")


@dataclasses.dataclass(frozen=True)
class PairColumns(UserColumn):
    """The user and item columns' header names in input files."""

    item_col: str = option("", "header name of the item column ('' for item, itemId, item_id, movieId or "
                               "movie_id, any case)", group="input and output")


@dataclasses.dataclass(frozen=True)
class RatingColumns(PairColumns):
    """The user, item and rating columns' header names in input files."""

    rating_col: str = option("", "header name of the rating column ('' for rating, any case)", group="input and output")
    time_col: str = option("", "header name of the time column, kept for split = time ('' for timestamp, time, "
                               "datetime, date or ts, any case; without a header the 4th column)",
                           group="input and output")


_model_option = functools.partial(option, group="model")


@dataclasses.dataclass(frozen=True)
class ModelOptions:
    """The model and its training loop (:class:`~mixlib.recsys.als.ALSParams`, whose defaults these keys take),
    with the global bias and the seed of the split and the initial factors."""

    rank: int = _model_option(ALSParams.rank, "latent factors per user and item", minimum=1)
    reg_lambda: float = _model_option(ALSParams.reg_lambda, "lambda: weight of the squared norms of the factors",
                                      minimum=1e-12)
    weighted_lambda: bool = _model_option(ALSParams.weighted_lambda, "scale lambda by each user's and item's rating "
                                                                     "count to the power lambda_exponent")
    lambda_exponent: float = _model_option(ALSParams.lambda_exponent, "weighted_lambda: lambda x count^this (1: "
                                                                      "ALS-WR's weighting)", minimum=0.0)
    bias_lambda: float = _model_option(ALSParams.bias_lambda, "weight of the squared biases (their own penalty, "
                                                              "not scaled by counts)", minimum=1e-12)
    feedback: str = _model_option(ALSParams.feedback, "explicit: ratings, predicted (RMSE); implicit: interactions "
                                                      "(views, clicks, counts or ratings), ranked for top-N lists "
                                                      "(Hu, Koren and Volinsky's weighted factorisation; no biases)",
                                  choices=("explicit", "implicit"))
    alpha: float = _model_option(ALSParams.alpha, "implicit feedback: an observed pair's confidence is 1 + alpha x "
                                                  "its value", minimum=0.0)
    global_bias: bool = _model_option(True, "predict mu + ... with mu the mean training rating")
    user_bias: bool = _model_option(ALSParams.user_bias, "learn a bias b_u per user")
    item_bias: bool = _model_option(ALSParams.item_bias, "learn a bias b_i per item")
    init: str = _model_option(ALSParams.init, "initial factors: random (seeded) or svd (truncated SVD of the "
                                              "ratings)", choices=("random", "svd"))
    init_scale: float = _model_option(ALSParams.init_scale, "random init: standard deviation of the initial factors",
                                      minimum=0.0)
    max_steps: int = _model_option(ALSParams.max_steps, "ALS steps (a user half-step and an item half-step) at most",
                                   minimum=1)
    eval_every: int = _model_option(ALSParams.eval_every, "compute the training and validation loss every this many "
                                                          "steps", minimum=1)
    log_every: int = option(ALSParams.log_every, "log a line every this many steps (a multiple of eval_every)",
                            minimum=1)
    patience: int = _model_option(ALSParams.patience, "stop after this many evaluations without a lower validation "
                                                      "RMSE; the best factors are restored", minimum=1)
    seed: int = _model_option(0, "random seed (split and initial factors)", minimum=0)
    block_ratings: int = option(ALSParams.block_ratings, "ratings per block of users (items) on the workers; whole "
                                                         "users (items) per block, cut from the data alone",
                                minimum=1)


def als_params(settings):
    """The :class:`~mixlib.recsys.als.ALSParams` of a settings object with :class:`ModelOptions`."""
    return ALSParams(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(ALSParams)})


@dataclasses.dataclass(frozen=True)
class TrainSettings(ServingOptions, ModelOptions, RatingColumns):
    """Settings of ``python -m jobs.recommend train`` (keys of configs/recommender.toml)."""

    ratings: str = option("", "ratings: .npy (N, 3), .csv/.tsv/.data/.txt (user, item, rating[, ...]), .parquet, "
                              "or delimited text of another suffix; columns found by header name or position",
                              group="input and output")
    drop_invalid: bool = option(False, "skip rows with a missing or non-finite id or rating instead of stopping",
                                group="input and output")
    min_entries: int = option(0, "cold-start filter: drop users and items with this many ratings or fewer, "
                                 "repeatedly (0: keep all)", minimum=0, group="model")
    shift_user_means: bool = option(False, "subtract each user's mean training rating before fitting", group="model")
    validation: float = option(0.05, "validation ratings: a count (>= 1) or a fraction (< 1)", minimum=0.0,
                               group="model")
    test: float = option(0.1, "test ratings: a count (>= 1) or a fraction (< 1)", minimum=0.0, group="model")
    warm_start: bool = option(False, "start known users and items from the published model's factors", group="model")
    resume: bool = option(False, "continue from the last checkpoint of an interrupted run (same config and data)",
                          group="input and output")
    checkpoint_dir: str = option("", "checkpoint folder ('' for MODEL_DIR/checkpoint)", group="input and output")
    checkpoint_every: int = option(5, "checkpoint every this many ALS steps (0: never)", minimum=0)
    guardrail_metric: str = option("auto", "the validation metric that picks the best step and that the guardrail "
                                           "compares: rmse, or ndcg@N, precision@N, recall@N or map@N of top-N "
                                           "lists; auto: rmse for explicit, ndcg@10 for implicit feedback",
                                   group="model")
    guardrail_tolerance: float = option(0.01, "refuse to publish (exit 3) when the validation metric is worse than "
                                              "the published model's on the validation ratings it never saw "
                                              "(without one: the bias-only or popularity baseline's) by more",
                                        minimum=0.0, group="model")
    validation_users: int = option(1000, "a ranking validation metric ranks a seeded sample of at most this many "
                                         "validation users at each evaluation (0: all; the guardrail ranks all)",
                                   minimum=0, group="model")
    relevant: float = option(4.0, "ranking metrics: a held-out value at least this is a relevant item (a file "
                                  "without values: every held-out pair)", group="model")
    refit: bool = option(True, "after early stopping, train again on every rating (validation and test too) for "
                               "the best number of steps and publish that model; the guardrail and the test "
                               "metrics judge the model trained without them", group="model")
    split: str = option("random", "held-out ratings: random (seeded), or time: the last of each user's ratings "
                                  "by time (the file's time column; see cutoff)", choices=("random", "time"),
                        group="model")
    cutoff: str = option("", "split = time: every rating at or after this date or time (ISO, or Unix seconds) is "
                             "a test rating ('' for the last fraction of each user's)", group="model")
    block_users: int = option(2048, "ranking metrics: users scored together (memory: block_users x items scores)",
                              minimum=1)
    local_ratings: int = option(250_000, "train in this process, without a cluster or a dashboard, up to this many "
                                         "ratings (the same blocks, so the same model; 0: always a cluster)",
                                minimum=0, group="cluster")
    force_publish: bool = option(False, "publish even when the guardrail would refuse (the metrics record it)",
                                 group="model")
    metrics: str = option("", "write the training metrics here (.json; '' for none)", group="input and output")
    plots: str = option("", "write the loss curves (loss-curves.png) into this folder ('' for none)",
                        group="input and output")


@dataclasses.dataclass(frozen=True)
class PredictSettings(ServingOptions, PairColumns):
    """Settings of ``python -m jobs.recommend predict``."""

    pairs: str = option("", "user,item pairs to predict (CSV/TSV or .parquet; an optional header such as "
                            "'user,item' or 'userId,movieId'), or a folder or quoted glob of such files, which the "
                            "workers read part by part", group="input and output")
    out: str = option("", "predictions: a .csv of user,item,prediction, or NAME.parquet, a dataset of part files "
                          "written by the workers", group="input and output")


@dataclasses.dataclass(frozen=True)
class RecommendSettings(ServingOptions, UserColumn):
    """Settings of ``python -m jobs.recommend recommend``."""

    top: int = option(10, "items per user", minimum=1, group="model")
    users: str = option("", "users to recommend for (one id per line, optional header such as 'user' or "
                            "'userId'); '' for all", group="input and output")
    out: str = option("", "recommendations: a .csv of user,rank,item,score, or NAME.parquet, a Parquet dataset (a "
                          "folder of part files) written by the workers", group="input and output")
    block_users: int = option(2048, "users scored together (memory: block_users x items scores)", minimum=1)


@dataclasses.dataclass(frozen=True)
class EvaluateSettings(ServingOptions, RatingColumns):
    """Settings of ``python -m jobs.recommend evaluate``."""

    ratings: str = option("", "held-out ratings, any format train reads: a file, or a folder or quoted glob of files "
                              "that the workers read", group="input and output")
    drop_invalid: bool = option(False, "skip rows with a missing or non-finite id or rating instead of stopping",
                                group="input and output")
    top: int = option(0, "also precision@N and recall@N of the top N recommendations (0: no)", minimum=0, group="model")
    relevant: float = option(4.0, "top N: a held-out rating at least this is a relevant item", group="model")
    block_users: int = option(2048, "users scored together (memory: block_users x items scores)", minimum=1)
    metrics: str = option("", "write the metrics here (.json; '' for none)", group="input and output")


def column_names(settings):
    """``{role: header name}`` of the column options ``settings`` has ('' where not given)."""
    return {role: getattr(settings, f"{role}_col", "") for role in (*ROLES, *OPTIONAL_ROLES)}
