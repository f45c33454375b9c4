"""Builds the loops compiled ahead of time (mixlib/core/loops.py): one extension module per room, compiled by
numba.pycc from the same source as numba's loops. Everything else about the package is in pyproject.toml."""

import os
import sys

from setuptools import setup

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # this checkout's mixlib, not an installed one

from mixlib.fit.loops import LOOPS as fit_loops  # noqa: E402
from mixlib.image.loops import LOOPS as image_loops  # noqa: E402

# optional: an install without a C compiler still works, with numba compiling every loop at first use
setup(ext_modules=[loops.extension_module(optional=True) for loops in (image_loops, fit_loops)])
