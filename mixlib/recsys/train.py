"""``python -m jobs.recommend train``: read ratings -> cold-start filter -> seeded split -> user-mean shift -> ALS on
the cluster from a fresh, warm or resumed start, checkpointed -> test metrics -> guardrail against the published
model on the validation ratings it never saw (or, when there is none, the bias-only baseline of the training
ratings) -> publish a new version and move ``latest``.
"""

import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np

from .. import __version__
from ..core.checkpoint import BlockCheckpoint, fingerprint
from ..core.errors import InputError, JobFailed, Refused
from ..core.outputs import (
    check_output,
    nearest_existing,
    optional_output,
    remove_new_folders,
    staged_outputs,
    writable_folder,
)
from ..core.storage import location
from .als import Factors, TrainingData, TrainingState, fit_als, fit_baseline, initial_factors, validate_rank
from .ratings import Ratings, cold_start_filter, read_ratings, split, user_means
from .settings import ModelOptions, TrainSettings, als_params, column_names
from .store import Model, ModelStore, residual_errors

log = logging.getLogger("mixlib")

# The guardrail's baseline: Surprise's BaselineOnly defaults (reg_u 15, reg_i 10).
BASELINE_REG_USER, BASELINE_REG_ITEM = 15.0, 10.0
# The fewest validation ratings new to the published model that the guardrail compares two models on; with fewer,
# the new model is published with a warning (a handful of ratings cannot tell two models apart by 0.01).
GUARDRAIL_MIN_RATINGS = 20


@dataclasses.dataclass
class TrainPlan:
    """A checked training run: the prepared ratings and where everything goes."""

    ratings: Ratings
    parts: dict
    means: np.ndarray
    store: ModelStore
    checkpoint: BlockCheckpoint
    warm: Model | None
    metrics: Path | None
    plots: Path | None
    new_folders: tuple = ()


def plan_train(settings):
    """Check the settings, read and prepare the ratings, check every output; raise InputError on a problem, leaving
    no folder behind that the checks made."""
    store = ModelStore(settings.model_dir)
    folder = location(settings.checkpoint_dir, "--checkpoint-dir") if settings.checkpoint_dir else \
        store.root / "checkpoint"
    new_folders = tuple((f, nearest_existing(f)) for f in (folder, store.root))
    try:
        job_plan = _plan_train(settings, store, folder)
    except BaseException:
        remove_new_folders(new_folders)
        raise
    return dataclasses.replace(job_plan, new_folders=new_folders)


def _plan_train(settings, store, folder):
    """:func:`plan_train` with the model store and the checkpoint folder."""
    if not settings.ratings:
        raise InputError("give the ratings to train on: --ratings PATH (.npy, .csv, .tsv, .data or .parquet)")
    if settings.log_every % settings.eval_every:
        raise InputError(f"--log-every {settings.log_every} must be a multiple of --eval-every "
                         f"{settings.eval_every} (a log line shows the latest evaluation)")
    metrics = optional_output(settings.metrics, settings.overwrite, (".json",), "--metrics")
    plots = location(settings.plots, "--plots") if settings.plots else None
    if plots is not None:
        check_output(plots / "loss-curves.png", settings.overwrite, (".png",))
    writable_folder(store.root, "--model-dir")
    warm = _warm_model(store, settings)
    ratings, parts, means = prepare(read_ratings(settings.ratings, settings.drop_invalid, column_names(settings)),
                                    min_entries=settings.min_entries, validation=settings.validation,
                                    test=settings.test, seed=settings.seed, shift_user_means=settings.shift_user_means)
    problem = validate_rank(settings.rank, len(ratings.user_ids), len(ratings.item_ids), settings.init)
    if problem:
        raise InputError(f"{problem}; lower --rank")
    checkpoint = BlockCheckpoint(folder, _fingerprint(settings, ratings, parts, warm),
                                 "another config or other ratings")
    checkpoint.check(settings.resume, "--checkpoint-dir")
    return TrainPlan(ratings, parts, means, store, checkpoint, warm, metrics, plots)


def prepare(ratings, *, min_entries, validation, test, seed, shift_user_means):
    """The seed's preprocessing: cold-start filter, seeded split, user means of the training ratings.

    Parameters
    ----------
    ratings : Ratings
    min_entries : int, drop users and items with this many ratings or fewer, repeatedly (0: keep all)
    validation, test : float, held-out ratings: a count (>= 1) or a fraction (< 1)
    seed : int, seeds the split
    shift_user_means : bool, compute each user's mean training rating (else zeros)

    Returns
    -------
    ratings : Ratings, filtered and re-indexed
    parts : dict 'train', 'validation', 'test' -> row numbers
    means : ndarray (n_users,), each user's mean training rating (zeros without ``shift_user_means``)
    """
    if min_entries:
        keep, _ = cold_start_filter(ratings.users, ratings.items, min_entries)
        before = ratings.shape
        ratings = ratings.subset(keep).reindexed()
        log.info("cold-start filter (min_entries %d): %d users x %d items, %d ratings -> %d x %d, %d",
                 min_entries, *before, *ratings.shape)
        if ratings.shape[2] == 0:
            raise InputError(f"the cold-start filter (min_entries {min_entries}) removed every rating; "
                             "lower --min-entries")
    train, validation, test = split(ratings.shape[2], _count_or_fraction(validation),
                                    _count_or_fraction(test), seed)
    log.info("split: %d training, %d validation, %d test ratings", len(train), len(validation), len(test))
    means = np.zeros(len(ratings.user_ids))
    if shift_user_means:
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
    keys = [f.name for f in dataclasses.fields(ModelOptions) if f.name not in ("log_every", "block_ratings")]
    keys += ["min_entries", "shift_user_means", "validation", "test", "warm_start"]
    values = {key: getattr(settings, key) for key in keys}
    values["warm_from"] = None if warm is None else warm.metrics.get("version")
    return fingerprint(values, ratings.users, ratings.items, ratings.values, ratings.user_ids, ratings.item_ids,
                       parts["train"], parts["validation"])


def training_data(ratings, parts, means, global_bias):
    """TrainingData of the (shifted) training and validation ratings; ``mu`` is their mean when ``global_bias``."""
    import scipy.sparse as sp

    shifted = ratings.values - means[ratings.users]
    rows = parts["train"]
    mu = float(shifted[rows].mean()) if global_bias else 0.0
    matrix = sp.csr_matrix((shifted[rows], (ratings.users[rows], ratings.items[rows])),
                           shape=(len(ratings.user_ids), len(ratings.item_ids)))
    held = parts["validation"]
    return TrainingData(matrix, (ratings.users[held], ratings.items[held], shifted[held]), mu)


def run_train(settings, job_plan, client):
    """Train, check the guardrail, publish; write metrics and plots. Returns the metrics (a dict). Folders the run
    created and left empty (a refused first model's model dir) are removed, whatever the outcome."""
    try:
        return _train_and_publish(settings, job_plan, client)
    finally:
        remove_new_folders(job_plan.new_folders)


def _train_and_publish(settings, job_plan, client):
    """:func:`run_train` without the removal of empty folders."""
    started = time.perf_counter()
    ratings, parts = job_plan.ratings, job_plan.parts
    data = training_data(ratings, parts, job_plan.means, settings.global_bias)
    params = als_params(settings)
    state = _starting_state(settings, params, job_plan, data)
    try:
        final, early = fit_als(client, data, params, state, _saver(job_plan.checkpoint), settings.checkpoint_every)
    except FloatingPointError as e:
        raise JobFailed(str(e)) from None
    model = _model(ratings, parts["train"], job_plan.means, data.mu, final.best, settings)
    metrics = _train_metrics(model, ratings, parts, final, early, settings, time.perf_counter() - started)
    with staged_outputs() as stage:
        if job_plan.plots is not None:
            from .plots import loss_curves

            loss_curves(stage(job_plan.plots / "loss-curves.png"), final.history)
        refusal, metrics["guardrail"] = _guardrail(job_plan.store, model, ratings, parts,
                                                   tolerance=settings.guardrail_tolerance,
                                                   clip=settings.clip_predictions, force=settings.force_publish)
        metrics["published"] = refusal is None
        if refusal is None:
            metrics["version"] = job_plan.store.publish(dataclasses.replace(model, metrics=metrics))
        if job_plan.metrics is not None:
            stage(job_plan.metrics).write_text(json.dumps(metrics, indent=2) + "\n")
    job_plan.checkpoint.clear()
    if refusal is not None:
        raise Refused(refusal)
    return metrics


def _starting_state(settings, params, job_plan, data):
    """A resumed state from the last checkpoint (``--resume``), else fresh, warm-started or not."""
    checkpoint = job_plan.checkpoint
    saved = checkpoint.load_latest() if checkpoint.start(settings.resume) else None
    if saved is not None:
        _, arrays, attrs = saved
        state = TrainingState.from_arrays(arrays, attrs["scalars"])
        log.info("resuming from the checkpoint of step %d in %s", state.step, checkpoint.folder)
        return state
    if settings.resume:
        log.info("--resume: no checkpoint in %s; starting from the beginning", checkpoint.folder)
    rng = np.random.default_rng(np.random.SeedSequence([settings.seed, 1]))
    known = None if job_plan.warm is None else _known_factors(job_plan.warm, job_plan.ratings)
    return TrainingState.start(initial_factors(data, params, rng, known))


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


def _saver(checkpoint):
    """``save(state)`` for the training loop: the state as the checkpoint's latest block."""
    def save(state):
        arrays, scalars = state.to_arrays()
        checkpoint.save_latest(f"step-{state.step:06d}", arrays, {"scalars": scalars})
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


def _guardrail(store, model, ratings, parts, *, tolerance, clip, force):
    """Whether to publish ``model``: ``(None or why not, what the metrics' ``guardrail`` records)``.

    Without a published model, the new model's validation RMSE is compared with the bias-only baseline's
    (:func:`baseline_rmse`) on every validation rating. With one, both are compared on the validation ratings the
    published model never saw (:func:`unseen_rows`): the others were in its input, which would favour it. Fewer
    than :data:`GUARDRAIL_MIN_RATINGS` such ratings, or no validation ratings at all: publish with a warning, no
    comparison. Worse by more than ``tolerance``: refused, unless ``force``.
    """
    rows = parts["validation"]
    if not len(rows):
        log.warning("guardrail: no validation ratings to compare on; publishing without a check")
        return None, {"compared_with": "nothing: no validation ratings", "ratings": 0}
    published = store.latest_name()
    if published is None:
        comparison = _baseline_comparison(model, ratings, parts, clip)
    else:
        comparison = _published_comparison(store.load(published), model, ratings, rows, clip)
    new, reference, what, record = comparison
    if new is None:  # ``what`` says why nothing was compared
        log.warning("guardrail: %s; publishing without a check", what)
        return None, record
    worse = new > reference + tolerance
    record.update({"validation_rmse": new, "tolerance": tolerance, "passed": not worse, "forced": worse and force})
    log.info("guardrail: validation RMSE %.6f against %.6f of %s", new, reference, what)
    return _verdict(new, reference, what, published, tolerance, force) if worse else None, record


def _verdict(new, reference, what, published, tolerance, force):
    """Why a model worse than ``reference`` is not published, or None with a warning when ``force``."""
    reason = f"validation RMSE {new:.4f} is worse than the {reference:.4f} of {what}, by more than {tolerance}"
    if force:
        log.warning("--force-publish: publishing although the %s", reason)
        return None
    kept = f"{published} stays published" if published else "no model is published"
    return f"not published: {reason}; {kept} (--force-publish publishes it anyway)"


def _baseline_comparison(model, ratings, parts, clip):
    """``(new RMSE, baseline RMSE, name in messages, record)`` on every validation rating."""
    rows = parts["validation"]
    rmse = baseline_rmse(ratings, parts, clip)
    record = {"compared_with": "baseline", "ratings": len(rows), "validation_ratings": len(rows),
              "baseline_validation_rmse": rmse,
              "baseline": {"reg_user": BASELINE_REG_USER, "reg_item": BASELINE_REG_ITEM}}
    what = f"the bias-only baseline on the {len(rows)} validation ratings"
    return _errors(model, ratings, rows, clip)["rmse"], rmse, what, record


def _published_comparison(published, model, ratings, rows, clip):
    """``(new RMSE, published RMSE, name in messages, record)`` on the validation ratings ``rows`` that
    ``published`` never saw; ``(None, None, why not, record)`` when they are fewer than
    :data:`GUARDRAIL_MIN_RATINGS`."""
    name = published.metrics["version"]
    unseen = unseen_rows(published, ratings, rows)
    record = {"compared_with": "published", "published_version": name, "ratings": len(unseen),
              "validation_ratings": len(rows), "minimum_ratings": GUARDRAIL_MIN_RATINGS}
    if len(unseen) < GUARDRAIL_MIN_RATINGS:
        reason = (f"only {len(unseen)} of the {len(rows)} validation ratings are new to the published model ({name}), "
                  f"fewer than the {GUARDRAIL_MIN_RATINGS} a fair comparison needs (the others were in its input)")
        record["compared_with"] = f"nothing: {reason}"
        return None, None, reason, record
    rmse = _published_rmse(published, ratings, unseen, clip)
    record["published_validation_rmse"] = rmse
    what = f"the published model ({name}) on the {len(unseen)} validation ratings it never saw"
    return _errors(model, ratings, unseen, clip)["rmse"], rmse, what, record


def unseen_rows(published, ratings, rows):
    """The row numbers among ``rows`` (ratings of this run) whose (user, item) pair was not in the input of the
    model ``published`` (:meth:`mixlib.recsys.store.Model.has_seen`; an id it does not know: not seen)."""
    users = published.user_index(ratings.user_ids[ratings.users[rows]])
    items = published.item_index(ratings.item_ids[ratings.items[rows]])
    return rows[~published.has_seen(users, items)]


def _published_rmse(published, ratings, rows, clip):
    """RMSE of the published model on ratings ``rows`` of this run (mapped to its ids)."""
    users = published.user_index(ratings.user_ids[ratings.users[rows]])
    items = published.item_index(ratings.item_ids[ratings.items[rows]])
    return residual_errors(ratings.values[rows] - published.predict_indices(users, items, clip))["rmse"]


def baseline_rmse(ratings, parts, clip):
    """Validation RMSE of the bias-only baseline ``mu + b_u + b_i`` fitted on the training ratings
    (:func:`mixlib.recsys.als.fit_baseline`; clipped to the training range when ``clip``)."""
    train, held = parts["train"], parts["validation"]
    mu, user_bias, item_bias = fit_baseline(ratings.users[train], ratings.items[train], ratings.values[train],
                                            len(ratings.user_ids), len(ratings.item_ids), BASELINE_REG_USER,
                                            BASELINE_REG_ITEM)
    predicted = mu + user_bias[ratings.users[held]] + item_bias[ratings.items[held]]
    if clip:
        predicted = np.clip(predicted, ratings.values[train].min(), ratings.values[train].max())
    return residual_errors(ratings.values[held] - predicted)["rmse"]
