"""The loops compiled ahead of time (mixlib/core/loops.py): built by the install, the same bits as numba's for every
signature, taken only by a job's own thread and only for arguments of exactly their types, refused when older than
their source; a small job never starts numba."""

import importlib
import logging
import subprocess
import sys

import numpy as np
import pytest
from conftest import cli_command, read_png, save_png

from mixlib.core import loops
from mixlib.fit.loops import LOOPS as FIT_LOOPS
from mixlib.image.loops import LOOPS as IMAGE_LOOPS

ROOMS = (IMAGE_LOOPS, FIT_LOOPS)


class CountedCalls:
    """Counts the calls of every ahead-of-time export of the rooms (by replacing the extension's functions)."""

    def __init__(self, monkeypatch):
        self.calls = {}
        for room in ROOMS:
            compiled = room.compiled()
            assert compiled is not None, f"{room.extension} was not built: reinstall mixlib (pip install -e .)"
            for name, signatures in room.signatures.items():
                for number in range(len(signatures)):
                    export = loops.export_name(name, number)
                    monkeypatch.setattr(compiled, export, self._counted(export, getattr(compiled, export)))

    def _counted(self, export, function):
        def counted(*args):
            self.calls[export] = self.calls.get(export, 0) + 1
            return function(*args)
        return counted


def _both_builds(compute):
    """``compute()`` with numba's loops, then in :func:`loops.ahead_of_time`."""
    jit = compute()
    with loops.ahead_of_time():
        aot = compute()
    return jit, aot


def _assert_same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    else:
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()  # the same bits, not merely close


def test_every_signature_gives_the_bits_of_numbas_loop(monkeypatch, small_china):
    """Through the public functions that call them: histograms (one block and merged blocks), RGB and RGBA lookups
    with uint8 and uint16 labels, k-means palettes (bounded Lloyd, k-means++, the nearest centres) and a Gaussian
    mixture's EM. Every export is called, and gives what numba's loop gives."""
    from mixlib.fit.gmm import fit_gmm, most_likely_component
    from mixlib.fit.kmeans import fit_kmeans
    from mixlib.image.colors import ColourLookup, image_histogram
    from mixlib.image.palette import fit_palette

    counted = CountedCalls(monkeypatch)
    rgb = np.ascontiguousarray(small_china)
    alpha = np.tile(np.linspace(0, 255, rgb.shape[1]).astype(np.uint8), (rgb.shape[0], 1))[..., None]
    rgba = np.concatenate([rgb, alpha], axis=2)

    def colours():
        results = []
        for pixels in (rgb, rgba, rgb[:, ::2]):  # the last: a strided view
            histogram = image_histogram(pixels, 64)
            codes, counts = histogram["codes"], histogram["counts"]
            channels = pixels.shape[2]
            palettes = [fit_palette(codes, counts, channels, k=k, in_process=True) for k in (16, 300)]
            lookups = [ColourLookup(codes, p.code_labels, channels)(pixels) for p in palettes]
            results.append((codes, counts, [(p.colours, p.code_labels) for p in palettes], lookups))
        return results

    _assert_same(*_both_builds(colours))
    points = np.random.default_rng(3).normal(size=(500, 3)) * 40 + 128

    def fits():
        kmeans = fit_kmeans(points, np.ones(500), k=7, init="k-means++", seed=1, in_process=True)
        gmm = fit_gmm(points, np.ones(500), k=3, seed=1, max_iter=20, in_process=True)
        return (kmeans.centres, kmeans.labels, gmm.mixture.means, gmm.mixture.covariances, gmm.mean_loglik,
                most_likely_component(points, gmm.mixture))

    _assert_same(*_both_builds(fits))
    exports = {loops.export_name(name, number) for room in ROOMS for name, signatures in room.signatures.items()
               for number in range(len(signatures))}
    assert exports - {"nearest__0", "lloyd_sums__0"} <= counted.calls.keys(), exports - counted.calls.keys()
    with loops.ahead_of_time():  # nearest and lloyd_sums, which the fits above may not reach, called directly
        from mixlib.fit.loops import lloyd_sums, nearest

        centres = points[:5].copy()
        _assert_same(nearest(points, centres), importlib.import_module("mixlib.fit.compiled").nearest(points, centres))
        _assert_same(lloyd_sums(points, np.ones(500), centres),
                     importlib.import_module("mixlib.fit.compiled").lloyd_sums(points, np.ones(500), centres))
    assert exports <= counted.calls.keys(), exports - counted.calls.keys()


def test_other_argument_types_and_other_threads_take_numbas_loops(monkeypatch):
    """float32 points, a Fortran-ordered or big-endian array, or a call outside :func:`loops.ahead_of_time` (a
    worker's thread) never reach the ahead-of-time build, whose loops do not check their arguments."""
    from mixlib.fit.loops import nearest

    counted = CountedCalls(monkeypatch)
    points = np.random.default_rng(0).normal(size=(50, 3))
    centres = points[:4].copy()
    expected = importlib.import_module("mixlib.fit.compiled").nearest(points, centres)
    _assert_same(nearest(points, centres), expected)
    with loops.ahead_of_time():
        _assert_same(nearest(np.asfortranarray(points), centres), expected)
        labels, distances = nearest(points.astype(np.float32), centres.astype(np.float32))
        assert np.array_equal(labels, expected[0])
        assert counted.calls == {}
        nearest(points, centres)
    assert not loops._fits(points.astype(">f8"), loops.array(np.float64, 2))  # big-endian: not the same dtype
    assert counted.calls == {"nearest__0": 1}


def test_a_build_older_than_its_source_is_not_used(monkeypatch, caplog):
    loops._compiled_module.cache_clear()
    monkeypatch.setattr(loops, "source_digest", lambda module: 12345)
    try:
        with caplog.at_level(logging.WARNING, logger="mixlib.core.loops"):
            assert FIT_LOOPS.compiled() is None
        assert "older than their source" in caplog.text and "reinstall" in caplog.text
    finally:
        loops._compiled_module.cache_clear()


def test_a_small_job_never_starts_numba_and_writes_what_the_cluster_writes(tmp_path, small_china, run_job):
    """The whole command in a fresh process: no numba module is imported, and the output is the bytes of the same
    job on the cluster (numba's loops in the workers)."""
    source = save_png(tmp_path / "photo.png", small_china)
    (tmp_path / "empty.toml").write_text("")  # the defaults, as run_job's
    command, env = cli_command(str(source), "--k", "32", "--out", str(tmp_path / "alone.png"), "--config",
                               str(tmp_path / "empty.toml"))
    code = ("import runpy, sys; sys.argv = ['jobs.compress', *sys.argv[1:]]\n"
            "try:\n    runpy.run_module('jobs.compress', run_name='__main__')\nexcept SystemExit as e:\n"
            "    assert e.code == 0, e.code\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numba', 'llvmlite', 'distributed')))")
    done = subprocess.run([sys.executable, "-c", code, *command[3:]], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout
    run_job(str(source), "--k", "32", "--out", str(tmp_path / "cluster.png"), "--local-pixels", "0")
    assert (tmp_path / "alone.png").read_bytes() == (tmp_path / "cluster.png").read_bytes()
    assert read_png(tmp_path / "alone.png")[2] == "P"


def test_scipys_blas_module_loads_alone_and_scipy_linalg_still_imports():
    code = ("import sys\nfrom mixlib.core.cli import load_blas_module_alone\nload_blas_module_alone()\n"
            "assert 'scipy.linalg.cython_blas' in sys.modules and 'scipy.linalg' not in sys.modules\n"
            "assert hasattr(sys.modules['scipy.linalg.cython_blas'], '__pyx_capi__')\n"
            "import numba, numpy as np\n"
            "assert numba.njit(lambda a, b: a @ b)(np.eye(2), np.ones(2)).tolist() == [1.0, 1.0]\n"
            "from scipy.linalg import solve_triangular\n"
            "assert solve_triangular(np.eye(2), np.ones(2)).tolist() == [1.0, 1.0]\nprint('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


@pytest.mark.parametrize("room", ROOMS, ids=lambda room: room.source)
def test_the_install_built_every_room(room):
    compiled = room.compiled()
    assert compiled is not None, f"{room.extension} is missing: the install's C compiler or numba failed"
    for name, signatures in room.signatures.items():
        for number in range(len(signatures)):
            assert callable(getattr(compiled, loops.export_name(name, number)))
