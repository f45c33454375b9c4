"""``mixlib.ExplicitALS`` and ``mixlib.ImplicitALS``: the recommender of ``jobs.recommend`` as estimators fitted on a
table of (user, item, rating) in memory, whose models are versions of the jobs' model store, both ways."""

import dataclasses

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from ..core.errors import InputError
from ..recsys.als import validate_rank
from ..recsys.dataset import Tasks, prepare_parts
from ..recsys.ratings import table_columns
from ..recsys.serve import recommendations
from ..recsys.settings import TrainSettings, als_params
from ..recsys.store import ModelStore
from ..recsys.train import fit_every_rating
from .inputs import seeds

# The settings an estimator's parameters name (the rest keep the job's defaults, with nothing held out).
SHARED_PARAMETERS = ("rank", "reg_lambda", "weighted_lambda", "lambda_exponent", "init", "init_scale", "max_steps",
                     "min_entries", "user_col", "item_col", "rating_col")


class _ALS(BaseEstimator):
    """What the explicit and the implicit models share: the fit on a table, predictions, top-N lists and the model
    store. A subclass names its ``feedback`` and its own parameters (``_parameters``)."""

    feedback = None
    _parameters = SHARED_PARAMETERS

    def fit(self, X, y=None):
        """Train on every row of the table ``X``: a pandas DataFrame, pyarrow Table, dict of columns or numpy
        array, with user, item and rating columns found as ``jobs.recommend train`` finds them in a file (by
        header name, ``user_col`` ... naming them; an (N, 3) array in that order). Repeated (user, item) pairs:
        the last wins. Nothing is held out: ``max_steps`` ALS steps are run (the job chooses them by early
        stopping on validation ratings). Returns self."""
        settings = self._settings(seeds(self.random_state, 1)[0])
        implicit = self.feedback == "implicit"
        try:
            users, items, values, times = table_columns(X, names=self._names(), values_optional=implicit)
            if implicit and (values < 0).any():
                raise InputError(f"implicit feedback needs values >= 0 (counts, ratings or 1), and "
                                 f"{int((values < 0).sum())} are negative")
            part = {"users": users, "items": items, "values": values, "order": np.arange(len(values)),
                    "times": times}
            prepared = prepare_parts(Tasks(None), [part], "the ratings table", min_entries=self.min_entries,
                                     validation=0, test=0, seed=settings.seed, split_by=None)
            problem = validate_rank(self.rank, len(prepared.user_ids), len(prepared.item_ids), self.init)
            if problem:
                raise InputError(f"{problem}; lower rank")
        except InputError as e:
            raise ValueError(str(e)) from None
        model = fit_every_rating(None, settings, als_params(settings), prepared)
        ratings, _ = prepared.gathered()  # sorted by user, then item: the pattern of what each user rated
        indptr = np.concatenate([[0], np.cumsum(np.bincount(ratings.users, minlength=len(ratings.user_ids)))])
        self.model_ = dataclasses.replace(model, seen_indptr=indptr, seen_indices=ratings.items.astype(np.int64),
                                          metrics={"ratings": int(len(ratings.values)), "steps": self.max_steps,
                                                   "trained_by": f"mixlib.{type(self).__name__}"})
        return self

    def predict(self, users, items):
        """Predicted ratings (explicit) or preference scores (implicit) ``(n,)`` of the pairs ``users[j]``,
        ``items[j]`` (ids). An unknown user or item gets the best the model has without it (the global bias plus
        the known side's bias); never NaN."""
        check_is_fitted(self)
        users, items = np.asarray(users), np.asarray(items)
        if users.shape != items.shape or users.ndim != 1:
            raise ValueError(f"users and items are two 1-D arrays of the same length; got shapes {users.shape} and "
                             f"{items.shape}")
        model = self.model_
        return model.predict_indices(model.user_index(users), model.item_index(items), self.clip_predictions)

    def recommend(self, users=None, n=10):
        """The ``n`` best items each user has not rated, best first, as ``jobs.recommend recommend`` writes them.

        Parameters
        ----------
        users : array-like of ids, or None for every user the model knows. An unknown user gets the items of
            highest bias (explicit) or the most popular ones (implicit).
        n : int

        Returns
        -------
        dict of ndarray columns ``user``, ``rank`` (1 = best), ``item`` and ``score``, a user's rows in rank order
        (``pandas.DataFrame(result)`` makes a table of it)
        """
        check_is_fitted(self)
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        users = self.model_.user_ids if users is None else np.asarray(users)
        return recommendations(self.model_, users, n, self.clip_predictions)

    def save(self, model_dir):
        """Publish the model as the next version of the model store ``model_dir`` (a path or fsspec URL) and point
        ``latest`` at it, as ``jobs.recommend train`` does (without its guardrail). Returns the version's name."""
        check_is_fitted(self)
        return ModelStore(model_dir).publish(self.model_)

    @classmethod
    def load(cls, model_dir, version=None):
        """The model ``version`` (default: the published one) of the model store ``model_dir``, trained by the job
        or saved by :meth:`save`, as a fitted estimator with the parameters it was trained with."""
        try:
            model = ModelStore(model_dir).load(version)
        except InputError as e:
            raise ValueError(str(e)) from None
        if model.feedback != cls.feedback:
            other = "ImplicitALS" if model.feedback == "implicit" else "ExplicitALS"
            raise ValueError(f"the model {model.metrics.get('version')} in {model_dir} learnt {model.feedback} "
                             f"feedback: open it with {other}")
        config = model.config
        estimator = cls(**{name: config[name] for name in cls._parameters if name in config},
                        random_state=config.get("seed", 0), clip_predictions=config.get("clip_predictions", True))
        estimator.model_ = model
        return estimator

    @property
    def user_ids_(self):
        """The users' ids ``(n_users,)``, sorted: the rows of :attr:`user_factors_`."""
        return self.model_.user_ids

    @property
    def item_ids_(self):
        """The items' ids ``(n_items,)``, sorted: the rows of :attr:`item_factors_`."""
        return self.model_.item_ids

    @property
    def user_factors_(self):
        """``(n_users, rank)``."""
        return self.model_.factors.user_factors

    @property
    def item_factors_(self):
        """``(n_items, rank)``."""
        return self.model_.factors.item_factors

    def _settings(self, seed):
        """The job's settings of this estimator: what its model keeps as ``config``, so that the job reads it."""
        params = {name: getattr(self, name) for name in self._parameters}
        return dataclasses.replace(TrainSettings(), feedback=self.feedback, seed=seed, validation=0, test=0,
                                   eval_every=self.max_steps, log_every=self.max_steps,
                                   clip_predictions=self.clip_predictions, **params)

    def _names(self):
        return {"user": self.user_col, "item": self.item_col, "rating": self.rating_col}


class ExplicitALS(_ALS):
    """Matrix factorisation of explicit ratings by alternating least squares, the model of ``jobs.recommend train``
    (``feedback = "explicit"``): ``r_ui ~ mean_u + mu + b_u + b_i + p_u . q_i``, trained in this process.

    Parameters
    ----------
    rank : int, default 16
    reg_lambda : float, default 1.3
    weighted_lambda : bool, default True
        lambda scaled by each user's (item's) rating count to the power ``lambda_exponent``.
    lambda_exponent : float, default 0.5
    bias_lambda : float, default 4.0
    global_bias, user_bias, item_bias : bool, default True
    shift_user_means : bool, default False
    init : {'svd', 'random'}, default 'svd'
    init_scale : float, default 0.1
    max_steps : int, default 20
        ALS steps (a user half-step and an item half-step).
    min_entries : int, default 0
        Cold-start filter: users and items with this many ratings or fewer are dropped, repeatedly.
    random_state : int, numpy RandomState or None, default 0
    clip_predictions : bool, default True
        Predictions clipped to the range of the training ratings.
    user_col, item_col, rating_col : str, default ''
        The table's column names ('' finds user / userId / user_id, item / itemId / movieId ..., rating).

    Attributes
    ----------
    model_ : mixlib.recsys.store.Model, the model the jobs publish and load
    user_ids_, item_ids_, user_factors_, item_factors_ : the model's ids and factors

    Examples
    --------
    >>> import numpy as np
    >>> from mixlib import ExplicitALS
    >>> table = {"user": [1, 1, 2, 2, 3], "item": [10, 20, 10, 30, 20], "rating": [5.0, 3.0, 4.0, 2.0, 1.0]}
    >>> model = ExplicitALS(rank=2, max_steps=5).fit(table)
    >>> model.predict([1, 3], [30, 10]).shape
    (2,)
    """

    feedback = "explicit"
    _parameters = SHARED_PARAMETERS + ("bias_lambda", "global_bias", "user_bias", "item_bias", "shift_user_means")

    def __init__(self, rank=16, *, reg_lambda=1.3, weighted_lambda=True, lambda_exponent=0.5, bias_lambda=4.0,
                 global_bias=True, user_bias=True, item_bias=True, shift_user_means=False, init="svd",
                 init_scale=0.1, max_steps=20, min_entries=0, random_state=0, clip_predictions=True, user_col="",
                 item_col="", rating_col=""):
        self.rank = rank
        self.reg_lambda = reg_lambda
        self.weighted_lambda = weighted_lambda
        self.lambda_exponent = lambda_exponent
        self.bias_lambda = bias_lambda
        self.global_bias = global_bias
        self.user_bias = user_bias
        self.item_bias = item_bias
        self.shift_user_means = shift_user_means
        self.init = init
        self.init_scale = init_scale
        self.max_steps = max_steps
        self.min_entries = min_entries
        self.random_state = random_state
        self.clip_predictions = clip_predictions
        self.user_col = user_col
        self.item_col = item_col
        self.rating_col = rating_col


class ImplicitALS(_ALS):
    """Weighted matrix factorisation of implicit feedback (Hu, Koren and Volinsky) by alternating least squares, the
    model of ``jobs.recommend train`` with ``feedback = "implicit"``: each observed pair's preference is 1 with
    confidence ``1 + alpha r_ui``, every other pair's 0 with confidence 1; no biases. Trained in this process.

    Parameters
    ----------
    rank : int, default 16
    reg_lambda : float, default 1.3
    weighted_lambda : bool, default True
    lambda_exponent : float, default 0.5
    alpha : float, default 1.0
    init : {'svd', 'random'}, default 'svd'
    init_scale : float, default 0.1
    max_steps : int, default 15
    min_entries : int, default 0
    random_state : int, numpy RandomState or None, default 0
    clip_predictions : bool, default True
    user_col, item_col, rating_col : str, default ''
        The table's column names; the rating column may be absent (every pair counts 1).

    Attributes
    ----------
    model_, user_ids_, item_ids_, user_factors_, item_factors_ : as :class:`ExplicitALS`
    """

    feedback = "implicit"
    _parameters = SHARED_PARAMETERS + ("alpha",)

    def __init__(self, rank=16, *, reg_lambda=1.3, weighted_lambda=True, lambda_exponent=0.5, alpha=1.0, init="svd",
                 init_scale=0.1, max_steps=15, min_entries=0, random_state=0, clip_predictions=True, user_col="",
                 item_col="", rating_col=""):
        self.rank = rank
        self.reg_lambda = reg_lambda
        self.weighted_lambda = weighted_lambda
        self.lambda_exponent = lambda_exponent
        self.alpha = alpha
        self.init = init
        self.init_scale = init_scale
        self.max_steps = max_steps
        self.min_entries = min_entries
        self.random_state = random_state
        self.clip_predictions = clip_predictions
        self.user_col = user_col
        self.item_col = item_col
        self.rating_col = rating_col
