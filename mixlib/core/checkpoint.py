"""Crash-safe Zarr groups, pointers to them, and :class:`BlockCheckpoint`: keyed blocks saved crash-safely and
checked against a fingerprint of their inputs (the colour histograms of a compress job, the state of ALS training).

Zarr writes each key atomically but not a group, and a half-written group opens without error. So a group is
written under a temporary name, its ``complete`` attribute is set last, it is renamed into place and its folder
fsynced; only then does a pointer file (replaced with ``os.replace``) name it. Readers follow the pointer and
refuse a group without ``complete``. A process killed at any moment leaves the previous pointer and the group it
names untouched. At an fsspec URL (:mod:`mixlib.core.storage`) there is no rename: the group is written in place and
the pointer is one object written whole, so ``complete`` and the pointer alone keep readers safe.
"""

import json
import os

import numpy as np

from .errors import InputError
from .outputs import writable_folder
from .storage import is_local, remove_tree, zarr_store

POINTER = "LATEST"


def write_group(path, arrays, attrs, fill=None):
    """Write arrays and JSON attributes as the Zarr group ``path`` (which must not exist), crash-safely.

    Parameters
    ----------
    path : Path or UPath
    arrays : dict name -> ndarray (numbers, or strings stored as variable-length UTF-8); '/' in a name nests
    attrs : dict of JSON values
    fill : callable ``(group path)`` or None, writes more arrays into the group (at its temporary path) before it
        is complete: arrays written by other processes, chunk by chunk
    """
    import zarr

    if is_local(path):
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    elif path.exists():  # at a URL the group is written in place: never over another writer's group
        raise FileExistsError(f"{path} exists")
    else:
        temporary = path
    group = zarr.open_group(zarr_store(temporary), mode="w")
    for name, values in arrays.items():
        values = np.asarray(values)
        if values.dtype.kind in "USTO":
            target = group.create_array(name, shape=values.shape, dtype=str)
            if values.size:
                target[...] = values.astype(str)
        else:
            group.create_array(name, data=values)
    if fill is not None:
        fill(temporary)
    group.attrs.update({"attrs": attrs, "complete": True})
    if temporary != path:
        temporary.rename(path)
        _fsync_folder(path.parent)


def read_group(path, skip=()):
    """``(arrays, attrs)`` of a group written by :func:`write_group` (without the arrays named in ``skip``);
    InputError if absent or incomplete."""
    import zarr

    try:
        group = zarr.open_group(zarr_store(path, read_only=True), mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        raise InputError(f"{path} is not a Zarr group") from None
    except ValueError:  # a zarr.json cut short: at a URL groups are written in place, so a kill can leave one
        raise InputError(f"{path} is incomplete (its writer stopped half-way); remove it") from None
    if not group.attrs.get("complete"):
        raise InputError(f"{path} is incomplete (its writer stopped half-way); remove it")
    arrays = {name: _plain(node[...]) for name, node in group.members(max_depth=None)
              if isinstance(node, zarr.Array) and name not in skip}
    return arrays, dict(group.attrs["attrs"])


def _plain(values):
    """numpy values as written: variable-length strings come back as ``str`` arrays."""
    values = np.asarray(values)
    return np.array(values.tolist(), dtype=str) if values.dtype.kind == "T" else values


def point_to(folder, name, pointer=POINTER):
    """Make ``folder/pointer`` name ``name`` (atomically replaced; at a URL, one object written whole)."""
    _write_whole(folder / pointer, name + "\n")


def pointed(folder, pointer=POINTER):
    """The name that ``folder/pointer`` holds, or None without a pointer."""
    try:
        return (folder / pointer).read_text().strip() or None
    except FileNotFoundError:
        return None


def _fsync_folder(folder):
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


FINGERPRINT = "fingerprint.json"


class BlockCheckpoint:
    """Keyed blocks of arrays saved crash-safely in a folder, checked against a fingerprint of their inputs.

    A fresh run (:meth:`start` without ``resume``) empties the folder and records the fingerprint (any JSON value:
    a hash of a config and data, or what identifies an input file) in ``FINGERPRINT``; a resumed run keeps the
    blocks only when the folder records the same fingerprint, and refuses another one. Each block is a Zarr group
    ``folder/KEY`` written by :func:`write_group`, so a reader sees it whole or not at all; a block that another
    writer saved first (a task run twice after a lost worker) is kept. A loop whose state replaces itself saves each
    state under a new key and then moves the ``LATEST`` pointer to it (:meth:`save_latest`): killed between the two,
    it leaves the previous state in place.

    Parameters
    ----------
    folder : Path or UPath (:func:`mixlib.core.storage.location`), shared with the workers if they save blocks
    fingerprint : JSON value, what the blocks are computed from
    other : str, what a mismatching folder was made from, for the error message ('another input')
    """

    def __init__(self, folder, fingerprint, other):
        self.folder, self.fingerprint, self.other = folder, fingerprint, other

    def check(self, resume, flag):
        """InputError now, before any work: the folder cannot be written, or (``resume``) it holds blocks of
        another fingerprint."""
        if resume and self._recorded() not in (None, self.fingerprint):
            raise InputError(f"the checkpoint in {self.folder} was made from {self.other}; rerun without --resume "
                             "to start again, or with what it was made from")
        writable_folder(self.folder, flag)

    def start(self, resume):
        """Keep the saved blocks when ``resume`` and the folder records this fingerprint; else empty the folder
        and record it. Returns whether saved blocks were kept."""
        if resume and self._recorded() == self.fingerprint:
            return True
        self.clear()
        self.folder.mkdir(parents=True)
        _write_whole(self.folder / FINGERPRINT, json.dumps(self.fingerprint))
        return False

    def keys(self):
        """The keys of the complete and incomplete blocks in the folder."""
        return sorted(p.name for p in self.folder.iterdir() if p.is_dir() and not p.name.startswith("."))

    def save(self, key, arrays, attrs=None):
        """Save a block (dict name -> ndarray, JSON ``attrs``) under ``key``, unless a complete one is there."""
        path = self.folder / key
        if path.exists():
            if self.load(key) is not None:
                return
            remove_tree(path)  # left incomplete by a writer killed mid-write (at a URL: written in place)
        try:
            write_group(path, arrays, attrs or {})
        except OSError:  # another writer of the same block renamed its copy into place first
            if self.load(key) is None:
                raise

    def load(self, key):
        """``(arrays, attrs)`` of the block ``key``, or None when it is absent or incomplete."""
        try:
            return read_group(self.folder / key)
        except InputError:
            return None

    def save_latest(self, key, arrays, attrs=None):
        """Save the block ``key``, point ``LATEST`` at it, and remove every other block."""
        self.save(key, arrays, attrs)
        point_to(self.folder, key)
        for old in self.keys():
            if old != key:
                remove_tree(self.folder / old)

    def load_latest(self):
        """``(key, arrays, attrs)`` of the block ``LATEST`` names, or None when there is none."""
        key = pointed(self.folder)
        saved = None if key is None else self.load(key)
        return None if saved is None else (key, *saved)

    def clear(self):
        """Remove the folder and every block in it (after a finished run)."""
        remove_tree(self.folder)

    def _recorded(self):
        """The fingerprint the folder records, or None."""
        try:
            return json.loads((self.folder / FINGERPRINT).read_text())
        except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
            return None


def _write_whole(path, text):
    """Write a small file whole: under a temporary name, synced, then renamed over ``path`` (at a URL: one object,
    written whole)."""
    if not is_local(path):
        path.write_text(text)
        return
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
    _fsync_folder(path.parent)


def fingerprint(settings, *arrays):
    """A hex SHA-256 of JSON-able ``settings`` (dict) and the bytes of ``arrays``."""
    import hashlib

    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(str((array.dtype.str, array.shape)).encode())
        digest.update(array.data if array.dtype.kind not in "USTO" else "\0".join(map(str, array.ravel())).encode())
    return digest.hexdigest()
