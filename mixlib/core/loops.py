"""The compiled loops a caller gets: numba's, compiled at first use, or the same loops compiled ahead of time.

numba's start (its import, its type registries, loading each cached loop) takes about half a second, more than a
small image's whole work. So the loops that a job runs in its own thread are also compiled when mixlib is
installed (``setup.py``, by ``numba.pycc``) into an extension module beside their source, from the same Python
source and for the argument types that a room lists in its :class:`Loops` (``mixlib/image/loops.py``,
``mixlib/fit/loops.py``): a small job that finds them there never starts numba.

Which a call gets (:meth:`Loops.loop`):

- numba's, unless the calling thread is inside :func:`ahead_of_time` (a job's own thread). numba's loops release
  the GIL, which the threads of a Dask worker need to run side by side; the ahead-of-time ones hold it.
- the ahead-of-time loop when the thread is inside :func:`ahead_of_time`, the extension module is there, it was
  built from the source file as it is now (its digest is compiled into it), and the arguments have exactly
  the types of one of its signatures. Otherwise numba's, which gives the same result.

Both are compiled by numba from the same source without fast-math, so they compute the same bits
(``tests/test_core_loops.py`` checks every signature of every room).
"""

import contextlib
import dataclasses
import functools
import hashlib
import importlib
import importlib.util
import logging
import threading

import numpy as np

log = logging.getLogger(__name__)


def array(dtype, ndim, contiguous=True):
    """The type of an ndarray argument: its dtype, its dimensions, and whether it must be C-contiguous (else any
    strides)."""
    return ("array", np.dtype(dtype).name, ndim, contiguous)


def tuple_of(*items):
    """The type of a tuple argument of the given item types."""
    return ("tuple", items)


BOOL = ("bool",)
DIGEST_FUNCTION = "source_digest"  # each extension's function that returns the digest of the source it was built from

_thread = threading.local()


@contextlib.contextmanager
def ahead_of_time():
    """Inside this block, the calling thread (only) gets the ahead-of-time loops where they fit (see the module)."""
    before = getattr(_thread, "ahead_of_time", False)
    _thread.ahead_of_time = True
    try:
        yield
    finally:
        _thread.ahead_of_time = before


@dataclasses.dataclass(frozen=True)
class Loops:
    """A room's compiled loops in two builds.

    Attributes
    ----------
    source : str, the module of the numba functions (``"mixlib.fit.compiled"``)
    extension : str, the module they are compiled into ahead of time (``"mixlib.fit._loops"``)
    signatures : dict, a function's name -> the argument types it is compiled for ahead of time, a list of tuples
        of :func:`array`, :func:`tuple_of` and :data:`BOOL` (a function not listed is numba's only)
    """

    source: str
    extension: str
    signatures: dict

    def loop(self, name):
        """The loop ``name``: a callable that runs numba's or the ahead-of-time compiled one (see the module)."""
        return _Loop(self, name, tuple(enumerate(self.signatures.get(name, ()))))

    def compiled(self):
        """The extension module, or None when it is not there (an install without a compiler) or was built from
        another source than the one beside it now (an edited checkout: reinstall to rebuild it)."""
        return _compiled_module(self.source, self.extension)

    def extension_module(self, **extension_options):
        """The setuptools extension of :attr:`extension`, compiled by ``numba.pycc`` (for ``setup.py``; needs
        numba). Each export's result type is the one numba infers for its arguments."""
        import numba
        from numba.pycc import CC

        cc = CC(self.extension.rpartition(".")[2], source_module=importlib.import_module(self.source))
        for name, signatures in self.signatures.items():
            dispatcher = getattr(importlib.import_module(self.source), name)
            for number, argument_types in enumerate(signatures):
                arguments = tuple(_numba_type(numba, t) for t in argument_types)
                dispatcher.compile(arguments)
                result = dispatcher.overloads[arguments].signature.return_type
                cc.export(export_name(name, number), result(*arguments))(dispatcher.py_func)
        cc.export(DIGEST_FUNCTION, numba.int64())(_constant(source_digest(self.source)))
        return cc.distutils_extension(**extension_options)


class _Loop:
    """A loop of two builds; see :meth:`Loops.loop`."""

    def __init__(self, loops, name, signatures):
        self.loops, self.name, self.signatures = loops, name, signatures

    def __call__(self, *args):
        if self.signatures and getattr(_thread, "ahead_of_time", False):
            compiled = self.loops.compiled()
            if compiled is not None:
                for number, argument_types in self.signatures:
                    if len(args) == len(argument_types) and all(map(_fits, args, argument_types)):
                        return getattr(compiled, export_name(self.name, number))(*args)
        return getattr(importlib.import_module(self.loops.source), self.name)(*args)

    def __repr__(self):
        return f"<loop {self.name} of {self.loops.source}>"


def _fits(value, argument_type):
    """Whether ``value`` has exactly the type ``argument_type`` (:func:`array`, :func:`tuple_of`, :data:`BOOL`)."""
    kind = argument_type[0]
    if kind == "bool":
        return isinstance(value, (bool, np.bool_))
    if kind == "tuple":
        items = argument_type[1]
        return isinstance(value, tuple) and len(value) == len(items) and all(map(_fits, value, items))
    _, dtype, ndim, contiguous = argument_type
    return (type(value) is np.ndarray and value.dtype == np.dtype(dtype) and value.ndim == ndim  # native order
            and (value.flags.c_contiguous or not contiguous) and value.flags.aligned)


def export_name(name, number):
    """The extension's name for signature ``number`` of loop ``name``."""
    return f"{name}__{number}"


@functools.cache
def _compiled_module(source, extension):
    try:
        compiled = importlib.import_module(extension)
    except ImportError:
        log.debug("no loops compiled ahead of time (%s): numba compiles them", extension)
        return None
    if getattr(compiled, DIGEST_FUNCTION)() != source_digest(source):
        log.warning("the loops compiled ahead of time in %s are older than their source; numba compiles them "
                    "instead (reinstall mixlib to rebuild them)", extension)
        return None
    return compiled


def source_digest(module):
    """A 63-bit digest (int) of the source file of ``module``, found without importing it."""
    with open(importlib.util.find_spec(module).origin, "rb") as source:
        return int.from_bytes(hashlib.sha256(source.read()).digest()[:8], "little") >> 1


def _constant(value):
    def constant():
        return value
    return constant


def _numba_type(numba, argument_type):
    kind = argument_type[0]
    if kind == "bool":
        return numba.boolean
    if kind == "tuple":
        return numba.types.Tuple(tuple(_numba_type(numba, t) for t in argument_type[1]))
    _, dtype, ndim, contiguous = argument_type
    return numba.types.Array(numba.from_dtype(np.dtype(dtype)), ndim, "C" if contiguous else "A")
