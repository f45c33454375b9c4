"""The colour loops of :mod:`mixlib.image.compiled` as callers get them: numba's, or compiled ahead of time for a
job's own thread (:mod:`mixlib.core.loops`). The signatures are the types that the job's thread passes; a
palette's labels are uint8 up to 256 colours, else uint16."""

import numpy as np

from ..core.loops import Loops, array

_PIXELS = array(np.uint8, 3, contiguous=False)  # (h, w, C) blocks, views of an image
_CODES, _COUNTS = array(np.uint32, 1), array(np.int64, 1)  # also the starts of the lookup's buckets
_LABELS = [array(np.uint8, 1), array(np.uint16, 1)]

LOOPS = Loops("mixlib.image.compiled", "mixlib.image._loops", {
    "colour_codes": [(_PIXELS,)],
    "code_counts": [(_CODES,)],
    "merge_counts": [(_CODES, _COUNTS, _CODES, _COUNTS)],
    "rgb_lookup": [(_PIXELS, labels) for labels in _LABELS],
    "bucketed_lookup": [(_PIXELS, _CODES, _COUNTS, labels) for labels in _LABELS],
})

colour_codes, code_counts, merge_counts, rgb_lookup, bucketed_lookup = map(LOOPS.loop, LOOPS.signatures)
