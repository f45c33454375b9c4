"""``python -m jobs.recommend train``: read ratings -> cold-start filter -> seeded split -> user-mean shift -> ALS on
the cluster from a fresh, warm or resumed start, checkpointed -> test metrics -> guardrail against the published
model on the validation ratings it never saw (or, when there is none, the bias-only baseline of the training
ratings) -> publish a new version and move ``latest``.
"""

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np

from .. import __version__
from ..core.checkpoint import BlockCheckpoint, fingerprint
from ..core.errors import InputError, JobFailed, Refused
from ..core.outputs import (
    check_output,
    json_text,
    nearest_existing,
    optional_output,
    remove_new_folders,
    staged_outputs,
    writable_folder,
)
from ..core.storage import location
from .als import (
    BlockedRatings,
    Factors,
    TrainingData,
    TrainingState,
    fit_als,
    initial_items,
    validate_rank,
)
from .ranking import (
    RankingValidation,
    metric_label,
    parse_metric,
    relevant_threshold,
)
from .dataset import (
    PART_NAMES,
    PreparedRatings,
    Tasks,
    content_digest,
    dataset_files,
    is_dataset,
    pattern_indptr,
    prepare_dataset,
    prepare_parts,
    rating_blocks,
    write_pattern,
)
from .judging import (
    baseline_rmse,
    held_out_counts,
    latest_time,
    part_errors,
    popularity_scorer,
    published_comparison,
    ranking,
    validation_sample,
    value_range,
)
from .ratings import parse_time, user_means
from .settings import ModelOptions, TrainSettings, als_params, column_names
from .store import Model, ModelStore, load_model

log = logging.getLogger("mixlib")

# The guardrail's baseline: Surprise's BaselineOnly defaults (reg_u 15, reg_i 10).
BASELINE_REG_USER, BASELINE_REG_ITEM = 15.0, 10.0
# The fewest validation ratings new to the published model that the guardrail compares two models on; with fewer,
# the new model is published with a warning (a handful of ratings cannot tell two models apart by 0.01).
GUARDRAIL_MIN_RATINGS = 20


@dataclasses.dataclass
class TrainPlan:
    """A checked training run: the prepared ratings and where everything goes. The ratings of a dataset are read
    by the workers when the run starts: until then ``prepared`` is None and ``checkpoint`` is its folder
    (:func:`with_ratings`)."""

    store: ModelStore
    checkpoint: BlockCheckpoint | Path
    warm: Model | None
    metrics: Path | None
    plots: Path | None
    metric: tuple = ("rmse", 0)
    cutoff: float | None = None
    prepared: PreparedRatings | None = None
    files: tuple = ()  # a dataset's files, which the workers read
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
    metric = _metric(settings)
    cutoff = parse_time(settings.cutoff) if settings.cutoff else None
    if cutoff is not None and settings.split != "time":
        raise InputError("--cutoff splits by time: add --split time (or leave --cutoff out)")
    warm = _warm_model(store, settings)
    job_plan = TrainPlan(store, folder, warm, metrics, plots, metric, cutoff=cutoff)
    if is_dataset(settings.ratings):  # a folder or pattern of no ratings file is refused before any work
        return dataclasses.replace(job_plan, files=tuple(dataset_files(settings.ratings)))  # read by the workers
    return with_ratings(settings, job_plan, None)


def with_ratings(settings, job_plan, client):
    """``job_plan`` completed with its prepared ratings, read and prepared on ``client``'s workers (in this process
    when None), and the checks that need them; InputError on a problem."""
    tasks = Tasks(client)
    implicit = settings.feedback == "implicit"
    prepared = prepare_dataset(tasks, job_plan.files or dataset_files(settings.ratings), names=column_names(settings),
                               implicit=implicit, drop_invalid=settings.drop_invalid,
                               **_preparation(settings, job_plan.cutoff))
    _check_cutoff(prepared, job_plan.cutoff)
    metric = job_plan.metric
    if metric[0] != "rmse":
        _check_relevant(prepared, settings.relevant)
        metric = (metric[0], min(metric[1], len(prepared.item_ids)))
    problem = validate_rank(settings.rank, len(prepared.user_ids), len(prepared.item_ids), settings.init)
    if problem:
        raise InputError(f"{problem}; lower --rank")
    checkpoint = BlockCheckpoint(job_plan.checkpoint, _fingerprint(settings, prepared, job_plan.warm),
                                 "another config or other ratings")
    checkpoint.check(settings.resume, "--checkpoint-dir")
    return dataclasses.replace(job_plan, checkpoint=checkpoint, metric=metric, prepared=prepared)


def _preparation(settings, cutoff):
    """The keyword arguments of :func:`mixlib.recsys.dataset.prepare_parts` that ``settings`` give."""
    return {"min_entries": settings.min_entries, "validation": _count_or_fraction(settings.validation),
            "test": _count_or_fraction(settings.test), "seed": settings.seed, "split_by": settings.split,
            "cutoff": cutoff, "shard_ratings": settings.block_ratings}  # a shard is a user block of ALS


def _check_relevant(prepared, relevant):
    """InputError when a ranking metric would have held-out ratings but no relevant one to rank by."""
    held, reaching = held_out_counts(prepared, _threshold(prepared, relevant))
    if held.sum() and not reaching.sum():
        raise InputError(f"no held-out rating reaches --relevant {relevant:g} (the highest is "
                         f"{value_range(prepared, (1, 2))[1]:g}), so a ranking metric has nothing to rank by: "
                         "lower --relevant")


def _threshold(prepared, relevant):
    """The lowest value of a relevant held-out rating (:func:`mixlib.recsys.ranking.relevant_threshold`)."""
    return relevant_threshold(np.array(value_range(prepared)), relevant)


def _check_cutoff(prepared, cutoff):
    """A warning when ``cutoff`` leaves no test rating."""
    if cutoff is not None and not prepared.part_counts[2]:
        log.warning("--cutoff %.0f (Unix seconds): no rating is that late (the latest is at %.0f), so there are "
                    "no test ratings", cutoff, latest_time(prepared))


def _metric(settings):
    """The validation metric ``(name, N)`` (:func:`mixlib.recsys.ranking.parse_metric`); InputError when unknown."""
    try:
        return parse_metric(settings.guardrail_metric, settings.feedback)
    except ValueError as e:
        raise InputError(f"--guardrail-metric: {e}") from None


def prepare(ratings, *, min_entries, validation, test, seed, shift_user_means, split_by="random", cutoff=None):
    """The seed's preprocessing of ratings in memory (:func:`mixlib.recsys.dataset.prepare_parts`, in this
    process): cold-start filter, split, user means of the training ratings.

    Parameters
    ----------
    ratings : Ratings
    min_entries : int, drop users and items with this many ratings or fewer, repeatedly (0: keep all)
    validation, test : float, held-out ratings: a count (>= 1) or a fraction (< 1)
    seed : int, seeds the split
    shift_user_means : bool, compute each user's mean training rating (else zeros)
    split_by : 'random' (seeded) or 'time' (the last of each user's ratings, or those from ``cutoff`` on:
        :func:`~mixlib.recsys.ratings.split_by_time`)
    cutoff : float or None, Unix seconds

    Returns
    -------
    ratings : Ratings, filtered and re-indexed, sorted by user and item
    parts : dict 'train', 'validation', 'test' -> row numbers
    means : ndarray (n_users,), each user's mean training rating (zeros without ``shift_user_means``)
    """
    part = {"users": ratings.user_ids[ratings.users], "items": ratings.item_ids[ratings.items],
            "values": ratings.values, "order": np.arange(ratings.shape[2], dtype=np.int64), "times": ratings.times}
    prepared = prepare_parts(Tasks(None), [part], "the ratings", min_entries=min_entries,
                             validation=_count_or_fraction(validation), test=_count_or_fraction(test), seed=seed,
                             split_by=split_by, cutoff=cutoff)
    _check_cutoff(prepared, cutoff)
    ratings, parts = prepared.gathered()
    means = np.zeros(len(ratings.user_ids))
    if shift_user_means:
        means = user_means(ratings.subset(parts["train"]))
        log.info("user-mean shift: mean of the user means %.4f", means.mean())
    return ratings, parts, means


def _count_or_fraction(value):
    """A float setting as the split wants it: a fraction below 1, else a whole count (an int passes)."""
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
    model = store.load(pattern=False)
    if model.feedback != settings.feedback:
        raise InputError(f"--warm-start: the published model learnt {model.feedback} feedback, not "
                         f"{settings.feedback}; train without --warm-start to change the kind of model")
    if model.factors.user_factors.shape[1] != settings.rank:
        raise InputError(f"--warm-start: the published model has rank {model.factors.user_factors.shape[1]}, "
                         f"not {settings.rank}; train without --warm-start to change the rank")
    return model


def _fingerprint(settings, prepared, warm):
    """What a checkpoint must match: the model and preprocessing settings, the prepared ratings (their ids and
    the digest of their content and split, :func:`mixlib.recsys.dataset.content_digest`) and any warm-start
    model."""
    keys = [f.name for f in dataclasses.fields(ModelOptions) if f.name not in ("log_every", "block_ratings")]
    keys += ["min_entries", "shift_user_means", "validation", "test", "warm_start", "split", "cutoff",
             "guardrail_metric", "relevant", "validation_users"]
    values = {key: getattr(settings, key) for key in keys}
    values["warm_from"] = None if warm is None else warm.metrics.get("version")
    values["state_format"] = 2  # the items and the items before them (TrainingState.to_arrays), no users
    return fingerprint(values, prepared.user_ids, prepared.item_ids, content_digest(prepared))


def training_data(ratings, parts, means, global_bias, feedback="explicit"):
    """TrainingData of the (shifted) training and validation ratings; ``mu`` is their mean when ``global_bias``
    (explicit feedback; 0 for implicit feedback, whose values stay as they are)."""
    import scipy.sparse as sp

    shifted = ratings.values - means[ratings.users]
    rows = parts["train"]
    mu = float(shifted[rows].mean()) if global_bias and feedback == "explicit" else 0.0
    matrix = sp.csr_matrix((shifted[rows], (ratings.users[rows], ratings.items[rows])),
                           shape=(len(ratings.user_ids), len(ratings.item_ids)))
    held = parts["validation"]
    return TrainingData(matrix, (ratings.users[held], ratings.items[held], shifted[held]), mu)


def blocked_training_data(client, prepared, settings, every=False):
    """TrainingData of the run's prepared ratings (PreparedRatings) as rating blocks built where the shards
    are (:func:`mixlib.recsys.dataset.rating_blocks`) and placed for ``client``: the training ratings, or with
    ``every`` all of them (the refit), less each user's mean over them (explicit feedback with
    ``shift_user_means``); ``mu`` their mean when ``global_bias``. The validation ratings (none with ``every``)
    go in item blocks beside the training ones, on the training scale (explicit feedback; the item half-step's
    tasks judge them); ``user_means`` holds the means."""
    implicit = settings.feedback == "implicit"
    held = () if every or implicit else (1,)
    blocks = rating_blocks(prepared, parts=(0, 1, 2) if every else (0,),
                           shift=settings.shift_user_means and not implicit, block_ratings=settings.block_ratings,
                           held=held)
    mu = blocks.total / blocks.count if settings.global_bias and not implicit else 0.0
    if settings.shift_user_means and not implicit and not every:
        log.info("user-mean shift: mean of the user means %.4f", blocks.means.mean())
    built_here = prepared.tasks.client is None
    sides = tuple(BlockedRatings.placed(client, parts, counts, side, held_parts) if built_here else
                  BlockedRatings(None, parts, counts, side, held_parts)
                  for parts, counts, side, held_parts in ((blocks.by_user, blocks.user_counts, "users", None),
                                                          (blocks.by_item, blocks.item_counts, "items",
                                                           blocks.held_by_item)))
    validation = 0 if every else int(prepared.part_counts[1])
    return BlockedData(None, validation, mu, sides, blocks.means, (blocks.lowest, blocks.highest))


@dataclasses.dataclass(frozen=True)
class BlockedData(TrainingData):
    """TrainingData from rating blocks (:func:`blocked_training_data`), with the users' means and the lowest and
    highest rating ``value_range`` of the ratings it holds (where the model clips its predictions)."""

    user_means: np.ndarray = None
    value_range: tuple = None


def train_worker_paths(job_plan, most=4):
    """What the workers of a run on a dataset read and write: the dataset's files (the first ``most``, as a
    sample), and the model directory, where they write the new model's pattern and read the published model.
    Nothing for one file, which this process reads and prepares."""
    if not job_plan.files:
        return (), ()
    return tuple(job_plan.files[:most]), (job_plan.store.root,)


def train_runs_here(settings, job_plan):
    """train runs in this process (:func:`mixlib.core.cli.job_main` asks) up to ``--local-ratings`` ratings: a
    cluster's round trips would cost more than the work of each step."""
    return job_plan.prepared is not None and job_plan.prepared.part_counts.sum() <= settings.local_ratings


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
    if job_plan.prepared is None:
        job_plan = with_ratings(settings, job_plan, client)
    data = blocked_training_data(client, job_plan.prepared, settings)
    params = als_params(settings)
    judge = Judge(job_plan.prepared, job_plan.metric, settings)
    try:  # the starting state is not held here: its items leave this process when the loop places them
        final, early = fit_als(client, data, params, _starting_state(settings, params, job_plan, data, client),
                               _saver(job_plan.checkpoint), settings.checkpoint_every, validation=judge.validation())
    except FloatingPointError as e:
        raise JobFailed(str(e)) from None
    model = _model(job_plan.prepared, data, final.best, settings)
    metrics = _train_metrics(model, final, early, settings, judge, time.perf_counter() - started)
    with staged_outputs() as stage:
        if job_plan.plots is not None:
            from .plots import loss_curves

            loss_curves(stage(job_plan.plots / "loss-curves.png"), final.history, judge.label)
        refusal, metrics["guardrail"] = _guardrail(job_plan.store, model, judge, tolerance=settings.guardrail_tolerance,
                                                   force=settings.force_publish)
        metrics["published"] = refusal is None
        if refusal is None:
            published = _refitted(client, settings, params, job_plan, final, metrics) if _refits(
                settings, job_plan.prepared, final) else model
            metrics["version"] = _publish(job_plan.store, dataclasses.replace(published, metrics=metrics),
                                          job_plan.prepared)
        if job_plan.metrics is not None:
            stage(job_plan.metrics).write_text(json_text(metrics))
    job_plan.checkpoint.clear()
    if refusal is not None:
        raise Refused(refusal)
    return metrics


def _refits(settings, prepared, final):
    """Whether the published model is trained again on every rating (:func:`_refitted`)."""
    return settings.refit and final.best_step > 0 and prepared.part_counts[1:].sum() > 0


def _refitted(client, settings, params, job_plan, final, metrics):
    """The model trained again on every rating (training, validation and test) from a fresh start with the same
    seed, for the ``final.best_step`` steps that early stopping chose, with no held-out ratings left to judge it;
    ``metrics`` records it under ``refit``."""
    started = time.perf_counter()
    n_ratings = int(job_plan.prepared.part_counts.sum())
    steps = final.best_step
    refit_params = dataclasses.replace(params, max_steps=steps, eval_every=steps, log_every=steps)
    log.info("refit: training again on all %d ratings for the %d steps chosen", n_ratings, steps)
    try:
        refit = fit_every_rating(client, settings, refit_params, job_plan.prepared, job_plan.warm)
    except FloatingPointError as e:
        raise JobFailed(f"refit: {e}") from None
    metrics["refit"] = {"ratings": n_ratings, "steps": steps,
                        "seconds": round(time.perf_counter() - started, 3)}
    return refit


def fit_every_rating(client, settings, params, prepared, warm=None):
    """The Model of ALS from a fresh start (:func:`_fresh_state`) on every prepared rating, for ``params.max_steps``
    steps with nothing held out to stop early: the job's refit, and :class:`mixlib.api.recommend.ExplicitALS` and
    ``ImplicitALS``. FloatingPointError when the factors stop being finite.

    Parameters
    ----------
    client : distributed.Client, or None to train in this process
    settings : TrainSettings, the model's settings (kept in the model's ``config``)
    params : ALSParams
    prepared : PreparedRatings
    warm : Model or None, the warm start's published model
    """
    data = blocked_training_data(client, prepared, settings, every=True)
    final, _ = fit_als(client, data, params, _fresh_state(settings, params, prepared, warm, data, client))
    return _model(prepared, data, final.current, settings)


def _starting_state(settings, params, job_plan, data, client):
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
    return _fresh_state(settings, params, job_plan.prepared, job_plan.warm, data, client)


def _fresh_state(settings, params, prepared, warm, data, client):
    """The state before the first step: seeded initial items, warm-started from the published model's known items
    with ``--warm-start``."""
    rng = np.random.default_rng(np.random.SeedSequence([settings.seed, 1]))
    known = None if warm is None else _known_items(warm, prepared)
    return TrainingState.start(*initial_items(data, params, rng, known, client))


def _known_items(warm, prepared):
    """The warm model's item factors and biases on this run's indices, NaN rows for the items it lacks (the
    first step solves every user from the items)."""
    users, items = warm.user_index(prepared.user_ids), warm.item_index(prepared.item_ids)
    f = warm.factors
    log.info("warm start from %s: %d of %d users and %d of %d items known", warm.metrics.get("version"),
             (users >= 0).sum(), len(users), (items >= 0).sum(), len(items))

    def rows(values, index):
        """``values[index]`` with NaN rows where ``index`` is -1 (an id the warm model does not know)."""
        known = (index >= 0).reshape((-1,) + (1,) * (values.ndim - 1))
        return np.where(known, values[np.maximum(index, 0)], np.nan)

    return rows(f.item_factors, items), rows(f.item_bias, items)


def _saver(checkpoint):
    """``save(state)`` for the training loop: the state as the checkpoint's latest block."""
    def save(state):
        arrays, scalars = state.to_arrays()
        checkpoint.save_latest(f"step-{state.step:06d}", arrays, {"scalars": scalars})
        log.debug("checkpoint of step %d written", state.step)

    return save


def _model(prepared, data, factors, settings):
    """The Model to publish: ``factors`` (StepFactors) with the means and ``mu`` of ``data`` (BlockedData) and the
    range of its ratings; it remembers every prepared rating (training, validation and test) as seen: its
    ``seen_indptr`` is here, and its ``seen_indices`` are written by :func:`_publish` where the shards are. When
    the workers prepared the ratings, the users stay where they were solved (the model's ``user_rows``) and the
    workers keep their copies of the items (``item_rows``, from which they write them); else everything is
    gathered here, where the ratings are."""
    config = {f.name: getattr(settings, f.name) for f in dataclasses.fields(TrainSettings)}
    rating_range = data.value_range if settings.feedback == "explicit" else None
    item_factors, item_bias = factors.items.here()
    no_users = Factors(np.zeros((0, item_factors.shape[1])), np.zeros(0), item_factors, item_bias)
    model = Model(no_users, data.mu, data.user_means, prepared.user_ids, prepared.item_ids,
                  pattern_indptr(prepared), None, config, {}, rating_range, user_rows=factors.users,
                  item_rows=factors.items)
    return model if prepared.tasks.client is not None else model.here()


def _publish(store, model, prepared):
    """Publish ``model`` (:func:`_model`) in ``store``, the pattern of its ratings written where the shards are
    (:func:`mixlib.recsys.dataset.write_pattern`), and its users' arrays where they are (the workers that prepared
    the ratings share the model directory: checked before any work). Returns the version's name."""
    return store.publish(model, write_seen=lambda path: write_pattern(prepared, path, model.seen_indptr))


class Judge:
    """How this run judges models on its held-out ratings, where the prepared ratings' shards are
    (:mod:`mixlib.recsys.judging`): RMSE (explicit models), or a ranking metric of top-N lists in which every user
    ranks every item outside its training ratings and the relevant items are the held-out ones whose value reaches
    ``relevant`` (every held-out one when all values are equal, as in a file of bare interactions).

    Parameters
    ----------
    prepared : PreparedRatings
    metric : tuple (name, N), :func:`mixlib.recsys.ranking.parse_metric`
    settings : TrainSettings, for ``relevant``, ``block_users``, ``clip_predictions``, ``feedback``,
        ``validation_users`` and ``seed``
    """

    def __init__(self, prepared, metric, settings):
        self.prepared = prepared
        self.metric, self.top = metric
        self.label = metric_label(*metric)
        self.ranks = self.metric != "rmse"
        self.explicit = settings.feedback == "explicit"
        self.clip, self.block_users = settings.clip_predictions, settings.block_users
        self.validation_users, self.seed = settings.validation_users, settings.seed
        self.threshold = _threshold(prepared, settings.relevant) if self.ranks else -np.inf
        self.key = "rmse" if not self.ranks else f"{self.metric}@{self.top}"
        self._last_errors = (None, None)

    @property
    def validation_ratings(self):
        return int(self.prepared.part_counts[1])

    def relevant_validation(self):
        """How many validation ratings are relevant."""
        return int(held_out_counts(self.prepared, self.threshold)[1][0])

    def validation(self):
        """What the training loop judges by: None (RMSE on the validation ratings) or a RankingValidation of a
        sample of the validation users."""
        if not self.ranks:
            return None
        sample = validation_sample(self.prepared, self.threshold, self.validation_users, self.seed)
        return RankingValidation(self.metric, self.top, *sample, self.block_users)

    def part_metrics(self, model):
        """What a report keeps of ``model`` on each part (``{"train": {...}, "validation": ..., "test": ...}``):
        the count of ratings, RMSE and MAE (explicit), and on the held-out parts the ranking metrics at N when the
        metric ranks."""
        errors = self._errors(model) if self.explicit else {}
        out = {}
        for number, name in enumerate(PART_NAMES):
            count = int(self.prepared.part_counts[number])
            out[name] = {"ratings": count, **errors.get(name, {})}
            if self.ranks and number and count:
                out[name].update(self._ranking(model.ranking_arrays(), number))
        return out

    def _errors(self, model):
        """:func:`mixlib.recsys.judging.part_errors` of ``model``, computed once per model (the report and the
        guardrail both ask)."""
        if self._last_errors[0] is not model:
            self._last_errors = (model, part_errors(self.prepared, model, self.clip))
        return self._last_errors[1]

    def _ranking(self, scorer, part):
        return ranking(self.prepared, scorer, part=part, threshold=self.threshold, top=self.top,
                       block_users=self.block_users)

    def score(self, model):
        """The metric of ``model`` (this run's indices) on every validation rating."""
        if not self.ranks:
            return self._errors(model)["validation"]["rmse"]
        return self._ranking(model.ranking_arrays(), 1)[self.key]

    def baseline(self):
        """``(score, description)`` of the baseline on every validation rating: the bias-only model (RMSE) or the
        most popular items of the training ratings (ranking)."""
        if not self.ranks:
            return baseline_rmse(self.prepared, BASELINE_REG_USER, BASELINE_REG_ITEM, self.clip), {
                "reg_user": BASELINE_REG_USER, "reg_item": BASELINE_REG_ITEM}
        metrics = self._ranking(popularity_scorer(self.prepared), 1)
        return metrics[self.key], {"kind": "popularity: items by their count of training ratings"}

    def against_published(self, model, published, loaded):
        """``(count, new score, published score)`` on the validation ratings the published model never saw
        (:func:`mixlib.recsys.judging.published_comparison`; ``loaded``: the whole published model where the
        tasks run)."""
        return published_comparison(self.prepared, model, published, loaded, threshold=self.threshold,
                                    clip=self.clip, ranking_top=(self.metric, self.top) if self.ranks else None,
                                    block_users=self.block_users)

    def worse(self, new, reference, tolerance):
        """Whether ``new`` is worse than ``reference`` by more than ``tolerance``."""
        return new > reference + tolerance if not self.ranks else new < reference - tolerance


def _train_metrics(model, final, early, settings, judge, seconds):
    metrics = {"feedback": settings.feedback, "metric": judge.label, "steps": final.step,
               "best_step": final.best_step, "converged_after": final.best_step if early else None,
               "early_stopped": early, "seconds": round(seconds, 3), "users": len(model.user_ids),
               "items": len(model.item_ids), "rating_range": model.rating_range and list(model.rating_range),
               "clipped": settings.clip_predictions and model.rating_range is not None, "mixlib": __version__}
    metrics.update(judge.part_metrics(model))
    metrics["history"] = final.history.tolist()
    log.info("%s; %s", _stopping(metrics, settings.max_steps, judge.label), _test_errors(metrics["test"]))
    return metrics


def _stopping(metrics, max_steps, label):
    """How training ended, in words."""
    if metrics["early_stopped"]:
        return (f"converged: the validation {label} stopped improving after step {metrics['converged_after']} "
                f"(stopped at step {metrics['steps']})")
    return f"stopped at max_steps {max_steps} without converging (best factors: step {metrics['best_step']})"


def _test_errors(test):
    """The test metrics, in words."""
    shown = {k: v for k, v in test.items() if k != "ratings" and isinstance(v, float)}
    if not shown:
        return "no test ratings"
    return "test " + ", ".join(f"{_shown_name(k)} {v:.6f}" for k, v in shown.items())


def _shown_name(key):
    name, at, top = key.partition("@")
    return f"{name.upper() if name in ('rmse', 'mae') else metric_label(name, int(top)) if at else name}"


def _guardrail(store, model, judge, *, tolerance, force):
    """Whether to publish ``model``: ``(None or why not, what the metrics' ``guardrail`` records)``.

    Without a published model, the new model's validation metric is compared with the baseline's
    (:meth:`Judge.baseline`) on every validation rating. With one, both are compared on the validation ratings the
    published model never saw (:meth:`Judge.against_published`): the others were in its input, which would favour
    it. Fewer than :data:`GUARDRAIL_MIN_RATINGS` such ratings, or no validation ratings at all: publish with a
    warning, no comparison. Worse by more than ``tolerance``: refused, unless ``force``. With the refit, the model
    judged here is the one trained without the validation ratings; the refitted one is published when it passes.
    """
    if not judge.validation_ratings:
        log.warning("guardrail: no validation ratings to compare on; publishing without a check")
        return None, {"compared_with": "nothing: no validation ratings", "ratings": 0}
    if judge.ranks and not judge.relevant_validation():
        log.warning("guardrail: no validation rating reaches --relevant; publishing without a check")
        return None, {"compared_with": "nothing: no relevant validation ratings", "ratings": 0}
    published = store.latest_name()
    previous = None if published is None else store.load(published, pattern=False)
    if previous is not None and previous.feedback == "implicit" and not judge.ranks:
        log.info("guardrail: the published model (%s) learnt implicit feedback and predicts no ratings, so the new "
                 "model's RMSE is compared with the baseline's", published)
        previous = None
    if previous is None:
        comparison = _baseline_comparison(model, judge)
    else:
        comparison = _published_comparison(store, previous, model, judge)
    new, reference, what, record = comparison
    if new is None:  # ``what`` says why nothing was compared
        log.warning("guardrail: %s; publishing without a check", what)
        return None, record
    worse = judge.worse(new, reference, tolerance)
    record.update({"metric": judge.label, f"validation_{judge.key}": new, "tolerance": tolerance,
                   "passed": not worse, "forced": worse and force})
    log.info("guardrail: validation %s %.6f against %.6f of %s", judge.label, new, reference, what)
    return _verdict(new, reference, what, published, tolerance, force, judge.label) if worse else None, record


def _verdict(new, reference, what, published, tolerance, force, label):
    """Why a model worse than ``reference`` is not published, or None with a warning when ``force``."""
    reason = f"validation {label} {new:.4f} is worse than the {reference:.4f} of {what}, by more than {tolerance}"
    if force:
        log.warning("--force-publish: publishing although the %s", reason)
        return None
    kept = f"{published} stays published" if published else "no model is published"
    return f"not published: {reason}; {kept} (--force-publish publishes it anyway)"


def _baseline_comparison(model, judge):
    """``(new score, baseline score, name in messages, record)`` on every validation rating."""
    count = judge.validation_ratings
    score, description = judge.baseline()
    kind = "bias-only" if not judge.ranks else "popularity"
    record = {"compared_with": "baseline", "ratings": count, "validation_ratings": count,
              f"baseline_validation_{judge.key}": score, "baseline": description}
    what = f"the {kind} baseline on the {count} validation ratings"
    return judge.score(model), score, what, record


def _published_comparison(store, published, model, judge):
    """``(new score, published score, name in messages, record)`` on the validation ratings that ``published``
    (read here without its pattern; the tasks read it whole) never saw (for a ranking metric: the relevant ones of
    users and items it knows, so both models rank the same relevant items); ``(None, None, why not, record)`` when
    they are fewer than :data:`GUARDRAIL_MIN_RATINGS`."""
    name = published.metrics["version"]
    loaded = judge.prepared.tasks.call(load_model, store.root, name)
    count, new, score = judge.against_published(model, published, loaded)
    total = judge.validation_ratings
    record = {"compared_with": "published", "published_version": name, "ratings": count,
              "validation_ratings": total, "minimum_ratings": GUARDRAIL_MIN_RATINGS}
    if count < GUARDRAIL_MIN_RATINGS:
        reason = (f"only {count} of the {total} validation ratings are new to the published model ({name}), "
                  f"fewer than the {GUARDRAIL_MIN_RATINGS} a fair comparison needs (the others were in its input)")
        record["compared_with"] = f"nothing: {reason}"
        return None, None, reason, record
    record[f"published_validation_{judge.key}"] = score
    what = f"the published model ({name}) on the {count} validation ratings it never saw"
    return new, score, what, record
