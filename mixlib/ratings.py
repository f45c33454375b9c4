"""Ratings: preprocessing of (user, item, rating) triplets as in the seed notebook.

Reading ratings files (npy, CSV/TSV, Parquet), id maps, user-mean shifting and the train/validation/test
split are still to come (issue 4); this module holds the cold-start filter.
"""

import logging

import numpy as np

log = logging.getLogger("mixlib")


def cold_start_filter(users, items, min_entries):
    """Which ratings survive the seed's cold-start filter.

    Users and items with ``min_entries`` or fewer ratings are removed, which can leave others with too
    few, until nothing changes. What remains is the largest set of ratings in which every user and every
    item has more than ``min_entries`` ratings (the bipartite (min_entries + 1)-core), whatever the order
    of removal; each round removes every user and item that falls short at once.

    Parameters
    ----------
    users, items : ndarray (N,) int, contiguous indices
    min_entries : int

    Returns
    -------
    keep : ndarray (N,) bool
    rounds : int, how many rounds removed something
    """
    keep = np.ones(len(users), dtype=bool)
    rounds = 0
    while True:
        user_counts = np.bincount(users[keep], minlength=users.max(initial=-1) + 1)
        item_counts = np.bincount(items[keep], minlength=items.max(initial=-1) + 1)
        short = keep & ((user_counts[users] <= min_entries) | (item_counts[items] <= min_entries))
        if not short.any():
            return keep, rounds
        rounds += 1
        before = int(keep.sum())
        keep &= ~short
        log.info("cold-start filter round %d: %d ratings -> %d", rounds, before, int(keep.sum()))
