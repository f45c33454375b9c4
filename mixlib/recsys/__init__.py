"""Recommenders: ratings, ALS and its baseline, the model store, the recommender's settings and jobs (train and
serving), loss plots. ``recsys`` imports ``core`` and ``fit``, never ``image``."""
