"""The per-point loops of :mod:`mixlib.fit.compiled` as callers get them: numba's, or compiled ahead of time for a
job's own thread (:mod:`mixlib.core.loops`). The kernels pass C-contiguous float64 points, weights and centres."""

import numpy as np

from ..core.loops import BOOL, Loops, array, tuple_of

_F1, _F2, _F3 = (array(np.float64, n) for n in (1, 2, 3))
_ORDER = array(np.int64, 2)

LOOPS = Loops("mixlib.fit.compiled", "mixlib.fit._loops", {
    "nearest": [(_F2, _F2)],
    "plusplus_centres": [(_F2, _F1, _F1, _F2)],
    "lloyd_sums": [(_F2, _F1, _F2)],
    "centre_neighbours": [(_F2, _ORDER, BOOL)],
    "bounded_lloyd_sums": [(_F2, _F1, _F2, tuple_of(_F2, _F1, _ORDER), _F1, array(np.int32, 2), _F2, BOOL)],
    "joint_log_prob": [(_F2, _F1, _F2, _F3)],
    "em_sums": [(_F2, _F1, _F1, _F2, _F3)],
})

(nearest, plusplus_centres, lloyd_sums, centre_neighbours, bounded_lloyd_sums, joint_log_prob,
 em_sums) = map(LOOPS.loop, LOOPS.signatures)
