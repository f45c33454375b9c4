"""The recommender's commands: ``train``, ``predict``, ``recommend`` and ``evaluate``.

``train``: read ratings -> cold-start filter -> seeded split -> user-mean shift -> ALS on the cluster from a fresh,
warm or resumed start, checkpointed -> test metrics -> guardrail against the published model (or, when there is
none, the bias-only baseline of the training ratings) -> publish a new version and move ``latest``. The serving
commands load the published model.
"""

import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np

from . import __version__
from .als import ALSOptions, Factors, TrainingData, TrainingState, fit_als, initial_factors, validate_rank
from .checkpoint import Checkpoints, fingerprint, writable_folder
from .cluster import ClusterOptions
from .config import option
from .errors import InputError, JobFailed, Refused
from .images import check_output, staged_outputs
from .models import Model, ModelStore, fit_baseline, rows_of, top_unseen
from .ratings import ROLES, Ratings, cold_start_filter, read_id_columns, read_ratings, split, user_means
from .storage import location

log = logging.getLogger("mixlib")

# The guardrail's baseline: Surprise's BaselineOnly defaults (reg_u 15, reg_i 10).
BASELINE_REG_USER, BASELINE_REG_ITEM = 15.0, 10.0


@dataclasses.dataclass(frozen=True)
class ServingOptions(ClusterOptions):
    """What every recommender command shares."""

    model_dir: str = option("models/recommender", "the model store: versions/ and the 'latest' pointer",
                            group="input and output")
    overwrite: bool = option(False, "replace output files that exist", group="input and output")
    log_level: str = option("info", "log detail on stderr", choices=("debug", "info", "warning", "error"))
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


def column_names(settings):
    """``{role: header name}`` of the column options ``settings`` has ('' where not given)."""
    return {role: getattr(settings, f"{role}_col", "") for role in ROLES}


@dataclasses.dataclass(frozen=True)
class TrainSettings(ServingOptions, ALSOptions, RatingColumns):
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
    guardrail_tolerance: float = option(0.01, "refuse to publish (exit 3) when the validation RMSE is worse than "
                                              "the published model's (without one: the bias-only baseline's) on "
                                              "the same ratings by more", minimum=0.0, group="model")
    force_publish: bool = option(False, "publish even when the guardrail would refuse (the metrics record it)",
                                 group="model")
    metrics: str = option("", "write the training metrics here (.json; '' for none)", group="input and output")
    plots: str = option("", "write the loss curves (loss-curves.png) into this folder ('' for none)",
                        group="input and output")


# ------------------------------------------------------------------------------------------- train

@dataclasses.dataclass
class TrainPlan:
    """A checked training run: the prepared ratings and where everything goes."""

    ratings: Ratings
    parts: dict
    means: np.ndarray
    store: ModelStore
    checkpoints: Checkpoints
    warm: Model | None
    metrics: Path | None
    plots: Path | None


def plan_train(settings):
    """Check the settings, read and prepare the ratings, check every output; raise InputError on a problem."""
    if not settings.ratings:
        raise InputError("give the ratings to train on: --ratings PATH (.npy, .csv, .tsv, .data or .parquet)")
    if settings.log_every % settings.eval_every:
        raise InputError(f"--log-every {settings.log_every} must be a multiple of --eval-every "
                         f"{settings.eval_every} (a log line shows the latest evaluation)")
    metrics = _output(settings.metrics, settings.overwrite, (".json",))
    plots = location(settings.plots, "--plots") if settings.plots else None
    if plots is not None:
        check_output(plots / "loss-curves.png", settings.overwrite, (".png",))
    store = ModelStore(settings.model_dir)
    writable_folder(store.root, "--model-dir")
    warm = _warm_model(store, settings)
    ratings, parts, means = prepare(read_ratings(settings.ratings, settings.drop_invalid, column_names(settings)),
                                    settings)
    problem = validate_rank(settings.rank, len(ratings.user_ids), len(ratings.item_ids), settings.init)
    if problem:
        raise InputError(f"{problem}; lower --rank")
    folder = settings.checkpoint_dir or store.root / "checkpoint"
    checkpoints = Checkpoints(folder, _fingerprint(settings, ratings, parts, warm))
    checkpoints.check_writable()
    return TrainPlan(ratings, parts, means, store, checkpoints, warm, metrics, plots)


def prepare(ratings, settings):
    """The seed's preprocessing: cold-start filter, seeded split, user means of the training ratings.

    Returns
    -------
    ratings : Ratings, filtered and re-indexed
    parts : dict 'train', 'validation', 'test' -> row numbers
    means : ndarray (n_users,), each user's mean training rating (zeros without ``shift_user_means``)
    """
    if settings.min_entries:
        keep, _ = cold_start_filter(ratings.users, ratings.items, settings.min_entries)
        before = ratings.shape
        ratings = ratings.subset(keep).reindexed()
        log.info("cold-start filter (min_entries %d): %d users x %d items, %d ratings -> %d x %d, %d",
                 settings.min_entries, *before, *ratings.shape)
        if ratings.shape[2] == 0:
            raise InputError(f"the cold-start filter (min_entries {settings.min_entries}) removed every rating; "
                             "lower --min-entries")
    train, validation, test = split(ratings.shape[2], _count_or_fraction(settings.validation),
                                    _count_or_fraction(settings.test), settings.seed)
    log.info("split: %d training, %d validation, %d test ratings", len(train), len(validation), len(test))
    means = np.zeros(len(ratings.user_ids))
    if settings.shift_user_means:
        means = user_means(ratings.subset(train))
        log.info("user-mean shift: mean of the user means %.4f", means.mean())
    return ratings, {"train": train, "validation": validation, "test": test}, means


def _count_or_fraction(value):
    """A float setting as the split wants it: a fraction below 1, else a whole count."""
    if value < 1:
        return value if value > 0 else 0
    if value != int(value):
        raise InputError(f"{value} ratings: a count must be a whole number (or give a fraction below 1)")
    return int(value)


def _warm_model(store, settings):
    if not settings.warm_start:
        return None
    if store.latest_name() is None:
        log.warning("--warm-start: no published model in %s yet; starting from scratch", store.root)
        return None
    model = store.load()
    if model.factors.user_factors.shape[1] != settings.rank:
        raise InputError(f"--warm-start: the published model has rank {model.factors.user_factors.shape[1]}, "
                         f"not {settings.rank}; train without --warm-start to change the rank")
    return model


def _fingerprint(settings, ratings, parts, warm):
    """What a checkpoint must match: the model and preprocessing settings, the data and any warm-start model."""
    keys = [f.name for f in dataclasses.fields(ALSOptions) if f.name not in ("log_every", "block_ratings")]
    keys += ["min_entries", "shift_user_means", "validation", "test", "warm_start"]
    values = {key: getattr(settings, key) for key in keys}
    values["warm_from"] = None if warm is None else warm.metrics.get("version")
    return fingerprint(values, ratings.users, ratings.items, ratings.values, ratings.user_ids, ratings.item_ids,
                       parts["train"], parts["validation"])


def training_data(ratings, parts, means, settings):
    """TrainingData of the (shifted) training and validation ratings."""
    import scipy.sparse as sp

    shifted = ratings.values - means[ratings.users]
    rows = parts["train"]
    mu = float(shifted[rows].mean()) if settings.global_bias else 0.0
    matrix = sp.csr_matrix((shifted[rows], (ratings.users[rows], ratings.items[rows])),
                           shape=(len(ratings.user_ids), len(ratings.item_ids)))
    held = parts["validation"]
    return TrainingData(matrix, (ratings.users[held], ratings.items[held], shifted[held]), mu)


def run_train(settings, job_plan, client):
    """Train, check the guardrail, publish; write metrics and plots. Returns the metrics (a dict)."""
    started = time.perf_counter()
    ratings, parts = job_plan.ratings, job_plan.parts
    data = training_data(ratings, parts, job_plan.means, settings)
    state = _starting_state(settings, job_plan, data)
    try:
        final, early = fit_als(client, data, settings, state, _saver(job_plan.checkpoints),
                               settings.checkpoint_every)
    except FloatingPointError as e:
        raise JobFailed(str(e)) from None
    model = _model(ratings, parts["train"], job_plan.means, data.mu, final.best, settings)
    metrics = _train_metrics(model, ratings, parts, final, early, settings, time.perf_counter() - started)
    with staged_outputs() as stage:
        if job_plan.plots is not None:
            from .plots import loss_curves

            loss_curves(stage(job_plan.plots / "loss-curves.png"), final.history)
        refusal = _guardrail(job_plan.store, ratings, parts, metrics, settings)
        metrics["published"] = refusal is None
        if refusal is None:
            metrics["version"] = job_plan.store.publish(dataclasses.replace(model, metrics=metrics))
        if job_plan.metrics is not None:
            stage(job_plan.metrics).write_text(json.dumps(metrics, indent=2) + "\n")
    job_plan.checkpoints.clear()
    if refusal is not None:
        raise Refused(refusal)
    return metrics


def _starting_state(settings, job_plan, data):
    """A resumed state from the last checkpoint (``--resume``), else fresh, warm-started or not."""
    if settings.resume:
        saved = job_plan.checkpoints.load()
        if saved is not None:
            state = TrainingState.from_arrays(*saved)
            log.info("resuming from the checkpoint of step %d in %s", state.step, job_plan.checkpoints.folder)
            return state
        log.info("--resume: no checkpoint in %s; starting from the beginning", job_plan.checkpoints.folder)
    rng = np.random.default_rng(np.random.SeedSequence([settings.seed, 1]))
    known = None if job_plan.warm is None else _known_factors(job_plan.warm, job_plan.ratings)
    return TrainingState.start(initial_factors(data, settings, rng, known))


def _known_factors(warm, ratings):
    """The warm model's factors and biases on this run's indices, NaN rows for users and items it lacks."""
    users, items = warm.user_index(ratings.user_ids), warm.item_index(ratings.item_ids)
    f = warm.factors
    log.info("warm start from %s: %d of %d users and %d of %d items known", warm.metrics.get("version"),
             (users >= 0).sum(), len(users), (items >= 0).sum(), len(items))

    def rows(values, index):
        """``values[index]`` with NaN rows where ``index`` is -1 (an id the warm model does not know)."""
        known = (index >= 0).reshape((-1,) + (1,) * (values.ndim - 1))
        return np.where(known, values[np.maximum(index, 0)], np.nan)

    return Factors(rows(f.user_factors, users), rows(f.user_bias, users), rows(f.item_factors, items),
                   rows(f.item_bias, items))


def _saver(checkpoints):
    def save(state):
        checkpoints.save(state.step, *state.to_arrays())
        log.debug("checkpoint of step %d written", state.step)

    return save


def _model(ratings, train, means, mu, factors, settings):
    """The Model to publish; it remembers every rating of the input (training, validation and test) as seen, and
    the range of the training ratings ``train`` (row numbers)."""
    import scipy.sparse as sp

    seen = sp.csr_matrix((np.ones(len(ratings.values), dtype=np.int8), (ratings.users, ratings.items)),
                         shape=(len(ratings.user_ids), len(ratings.item_ids)))
    config = {f.name: getattr(settings, f.name) for f in dataclasses.fields(TrainSettings)}
    values = ratings.values[train]
    return Model(factors, mu, means, ratings.user_ids, ratings.item_ids, seen.indptr.astype(np.int64),
                 seen.indices.astype(np.int64), config, {}, (float(values.min()), float(values.max())))


def _train_metrics(model, ratings, parts, final, early, settings, seconds):
    metrics = {"steps": final.step, "best_step": final.best_step,
               "converged_after": final.best_step if early else None, "early_stopped": early,
               "seconds": round(seconds, 3), "users": len(ratings.user_ids), "items": len(ratings.item_ids),
               "rating_range": list(model.rating_range), "clipped": settings.clip_predictions,
               "mixlib": __version__}
    for part in ("train", "validation", "test"):
        metrics[part] = {"ratings": len(parts[part]),
                         **_errors(model, ratings, parts[part], settings.clip_predictions)}
    metrics["history"] = final.history.tolist()
    log.info("%s; %s", _stopping(metrics, settings.max_steps), _test_errors(metrics["test"]))
    return metrics


def _stopping(metrics, max_steps):
    """How training ended, in words."""
    if metrics["early_stopped"]:
        return (f"converged: the validation RMSE stopped improving after step {metrics['converged_after']} "
                f"(stopped at step {metrics['steps']})")
    return f"stopped at max_steps {max_steps} without converging (best factors: step {metrics['best_step']})"


def _test_errors(test):
    """The test errors, in words."""
    if "rmse" not in test:
        return "no test ratings"
    return f"test RMSE {test['rmse']:.6f}, MAE {test['mae']:.6f}"


def _errors(model, ratings, rows, clip):
    """RMSE and MAE of the model on some ratings (original scale); empty without ratings."""
    if len(rows) == 0:
        return {}
    predicted = model.predict_indices(ratings.users[rows], ratings.items[rows], clip)
    return residual_errors(ratings.values[rows] - predicted)


def residual_errors(residual):
    """``{"rmse": sqrt(mean(r^2)), "mae": mean(|r|)}`` of residuals ``(n,)``, n > 0."""
    return {"rmse": float(np.sqrt(np.mean(residual ** 2))), "mae": float(np.mean(np.abs(residual)))}


def _guardrail(store, ratings, parts, metrics, settings):
    """None to publish, or why not: the new validation RMSE is worse by more than ``guardrail_tolerance`` than the
    published model's on this run's validation ratings, or, without a published model, than the bias-only
    baseline's (:func:`baseline_rmse`). ``force_publish`` publishes anyway. ``metrics["guardrail"]`` records
    what was compared."""
    rows, tolerance = parts["validation"], settings.guardrail_tolerance
    if not len(rows):
        log.warning("guardrail: no validation ratings to compare on; publishing without a check")
        metrics["guardrail"] = {"compared_with": "nothing: no validation ratings"}
        return None
    published = store.latest_name()
    reference, what, record = _reference(store, published, ratings, parts, settings.clip_predictions)
    new = metrics["validation"]["rmse"]
    worse = new > reference + tolerance
    metrics["guardrail"] = {**record, "validation_rmse": new, "tolerance": tolerance, "passed": not worse,
                            "forced": worse and settings.force_publish}
    log.info("guardrail: validation RMSE %.6f against %.6f of %s", new, reference, what)
    if not worse:
        return None
    reason = f"validation RMSE {new:.4f} is worse than the {reference:.4f} of {what} by more than {tolerance}"
    if settings.force_publish:
        log.warning("--force-publish: publishing although the %s", reason)
        return None
    kept = f"{published} stays published" if published else "no model is published"
    return f"not published: {reason}; {kept} (--force-publish publishes it anyway)"


def _reference(store, published, ratings, parts, clip):
    """``(validation RMSE, its name in messages, what the metrics record)`` of what the guardrail compares with:
    the published model ``published`` of ``store``, or the bias-only baseline when ``published`` is None."""
    if published is None:
        rmse = baseline_rmse(ratings, parts, clip)
        return rmse, "the bias-only baseline", {"compared_with": "baseline", "baseline_validation_rmse": rmse,
                                                "baseline": {"reg_user": BASELINE_REG_USER,
                                                             "reg_item": BASELINE_REG_ITEM}}
    rmse = _published_rmse(store.load(), ratings, parts["validation"], clip)
    return rmse, f"the published model ({published})", {"compared_with": "published", "published_version": published,
                                                        "published_validation_rmse": rmse}


def _published_rmse(published, ratings, rows, clip):
    """RMSE of the published model on ratings ``rows`` of this run (mapped to its ids)."""
    users = published.user_index(ratings.user_ids[ratings.users[rows]])
    items = published.item_index(ratings.item_ids[ratings.items[rows]])
    return residual_errors(ratings.values[rows] - published.predict_indices(users, items, clip))["rmse"]


def baseline_rmse(ratings, parts, clip):
    """Validation RMSE of the bias-only baseline ``mu + b_u + b_i`` fitted on the training ratings
    (:func:`mixlib.models.fit_baseline`; clipped to the training range when ``clip``)."""
    train, held = parts["train"], parts["validation"]
    mu, user_bias, item_bias = fit_baseline(ratings.users[train], ratings.items[train], ratings.values[train],
                                            len(ratings.user_ids), len(ratings.item_ids), BASELINE_REG_USER,
                                            BASELINE_REG_ITEM)
    predicted = mu + user_bias[ratings.users[held]] + item_bias[ratings.items[held]]
    if clip:
        predicted = np.clip(predicted, ratings.values[train].min(), ratings.values[train].max())
    return residual_errors(ratings.values[held] - predicted)["rmse"]


# ------------------------------------------------------------------------------------------ serving

@dataclasses.dataclass(frozen=True)
class PredictSettings(ServingOptions, PairColumns):
    """Settings of ``python -m jobs.recommend predict``."""

    pairs: str = option("", "user,item pairs to predict (CSV/TSV or .parquet; an optional header such as "
                            "'user,item' or 'userId,movieId')", group="input and output")
    out: str = option("", "predictions: a .csv of user,item,prediction", group="input and output")


@dataclasses.dataclass(frozen=True)
class RecommendSettings(ServingOptions, UserColumn):
    """Settings of ``python -m jobs.recommend recommend``."""

    top: int = option(10, "items per user", minimum=1, group="model")
    users: str = option("", "users to recommend for (one id per line, optional header such as 'user' or "
                            "'userId'); '' for all", group="input and output")
    out: str = option("", "recommendations: a .csv of user,rank,item,score", group="input and output")
    block_users: int = option(2048, "users scored together (memory: block_users x items scores)", minimum=1)


@dataclasses.dataclass(frozen=True)
class EvaluateSettings(ServingOptions, RatingColumns):
    """Settings of ``python -m jobs.recommend evaluate``."""

    ratings: str = option("", "held-out ratings, any format train reads", group="input and output")
    drop_invalid: bool = option(False, "skip rows with a missing or non-finite id or rating instead of stopping",
                                group="input and output")
    top: int = option(0, "also precision@N and recall@N of the top N recommendations (0: no)", minimum=0, group="model")
    relevant: float = option(4.0, "top N: a held-out rating at least this is a relevant item", group="model")
    block_users: int = option(2048, "users scored together (memory: block_users x items scores)", minimum=1)
    metrics: str = option("", "write the metrics here (.json; '' for none)", group="input and output")


def _output(path, overwrite, suffixes):
    if not path:
        return None
    path = location(path, "output")
    check_output(path, overwrite, suffixes)
    return path


def plan_predict(settings):
    if not settings.pairs or not settings.out:
        raise InputError("predict needs --pairs PATH and --out PATH.csv")
    out = _output(settings.out, settings.overwrite, (".csv",))
    users, items = read_id_columns(settings.pairs, ("user", "item"), column_names(settings))
    return _published_model(settings), users, items, out


def _published_model(settings):
    """The published model; says when its predictions cannot be clipped as ``clip_predictions`` asks."""
    model = ModelStore(settings.model_dir).load()
    if settings.clip_predictions and model.rating_range is None:
        log.info("model %s was stored without its training rating range: its predictions are not clipped "
                 "(train a new version to clip them)", model.metrics["version"])
    return model


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
    out = _output(settings.out, settings.overwrite, (".csv",))
    model = _published_model(settings)
    users = read_id_columns(settings.users, ("user",), column_names(settings))[0] if settings.users else model.user_ids
    return model, users, out


def run_recommend(settings, job_plan, client):
    """Write the top-N unseen items of each user (unknown users: the items with the highest bias)."""
    model, users, out = job_plan
    index = model.user_index(users)
    log.info("recommending %d items to %d users (%d unknown: the top items by bias)", settings.top, len(users),
             (index < 0).sum())
    items, scores = top_items(client, model, index, settings.top, settings.block_users)
    scores = model.clip(scores, settings.clip_predictions)  # ranked unclipped: clipping would make ties
    ranks = np.broadcast_to(np.arange(1, settings.top + 1), items.shape)
    present = items >= 0
    rows = np.repeat(np.asarray(users), settings.top).reshape(items.shape)
    with staged_outputs() as stage:
        _write_csv(stage(out), ("user", "rank", "item", "score"),
                   [rows[present], ranks[present], model.item_ids[items[present]], _numbers(scores[present])])


def top_items(client, model, users, top, block_users):
    """The top-``top`` unseen items ``(n, top)`` (-1 padding) and their predictions for user indices ``(n,)``
    (-1: unknown), scored block by block on the workers."""
    f = model.factors
    shared = client.scatter((f.item_factors, f.item_bias), broadcast=True, hash=False)
    futures = []
    for number, start in enumerate(range(0, len(users), block_users)):
        block = users[start:start + block_users]
        indptr, indices = rows_of(model.seen_indptr, model.seen_indices, block)
        factors = np.where((block >= 0)[:, None], f.user_factors[np.maximum(block, 0)], 0.0)
        futures.append(client.submit(_top_block, factors, indptr, indices, shared, top, pure=False,
                                     key=f"recommend-top-{number}"))
    parts = client.gather(futures)
    items = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, top), np.int64)
    scores = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, top))
    offset = model.mu + np.where(users >= 0, f.user_bias[np.maximum(users, 0)] + model.user_means[np.maximum(users, 0)],
                                 0.0)
    return items, scores + offset[:, None]


def _top_block(user_factors, seen_indptr, seen_indices, shared, top):
    return top_unseen(user_factors, seen_indptr, seen_indices, *shared, top)


def plan_evaluate(settings):
    if not settings.ratings:
        raise InputError("evaluate needs --ratings PATH (held-out ratings)")
    metrics = _output(settings.metrics, settings.overwrite, (".json",))
    heldout = read_ratings(settings.ratings, settings.drop_invalid, column_names(settings))
    return _published_model(settings), heldout, metrics


def run_evaluate(settings, job_plan, client):
    """RMSE and MAE of the model on held-out ratings; with ``--top N``, precision@N and recall@N."""
    model, heldout, metrics_path = job_plan
    users = model.user_index(heldout.user_ids)[heldout.users]
    items = model.item_index(heldout.item_ids)[heldout.items]
    residual = heldout.values - model.predict_indices(users, items, settings.clip_predictions)
    metrics = {"ratings": len(residual), "unknown_users": int((users < 0).sum()),
               "unknown_items": int((items < 0).sum()), **residual_errors(residual),
               "clipped": settings.clip_predictions and model.rating_range is not None}
    if settings.top:
        metrics.update(ranking_metrics(client, model, users, items, heldout.values, settings))
    log.info("evaluate: %s (%s)", ", ".join(f"{k} {v:.6g}" if isinstance(v, float) else f"{k} {v}"
                                            for k, v in metrics.items() if k != "clipped"),
             "predictions clipped to the training range" if metrics["clipped"] else "predictions not clipped")
    if metrics_path is not None:
        with staged_outputs() as stage:
            stage(metrics_path).write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def ranking_metrics(client, model, users, items, values, settings):
    """Mean precision@N and recall@N over the known users with at least one relevant held-out item.

    precision@N = |top N ∩ relevant| / N and recall@N = |top N ∩ relevant| / |relevant|, where the top N are the
    user's highest-predicted items not in the training ratings and ``relevant`` are the user's held-out items
    rated at least ``settings.relevant`` (known items only).
    """
    relevant = (values >= settings.relevant) & (users >= 0) & (items >= 0)
    evaluated = np.unique(users[relevant])
    if not len(evaluated):
        log.warning("evaluate --top: no held-out rating of a known user and item reaches %s", settings.relevant)
        return {"users_ranked": 0}
    top, _ = top_items(client, model, evaluated, settings.top, settings.block_users)
    n_items = len(model.item_ids)
    wanted = np.unique(users[relevant] * n_items + items[relevant])
    recommended = evaluated[:, None] * n_items + top
    hits = (np.isin(recommended, wanted) & (top >= 0)).sum(axis=1)
    n_relevant = np.bincount(np.searchsorted(evaluated, wanted // n_items), minlength=len(evaluated))
    return {f"precision@{settings.top}": float(np.mean(hits / settings.top)),
            f"recall@{settings.top}": float(np.mean(hits / n_relevant)), "users_ranked": len(evaluated),
            "relevant_rating": settings.relevant}


def _numbers(values):
    return np.char.mod("%.6g", values)


def _write_csv(path, header, columns):
    """A CSV with a header line; ``columns`` are arrays of equal length (written as text)."""
    import csv

    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(zip(*columns))
