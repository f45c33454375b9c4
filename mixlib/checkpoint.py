"""Crash-safe Zarr groups: a checkpoint of a loop's state, and a model version, are complete or absent.

Zarr writes each key atomically but not a group, and a half-written group opens without error. So a group is
written under a temporary name, its ``complete`` attribute is set last, it is renamed into place and its folder
fsynced; only then does a pointer file (replaced with ``os.replace``) name it. Readers follow the pointer and
refuse a group without ``complete``. A process killed at any moment leaves the previous pointer and the group it
names untouched. At an fsspec URL (:mod:`mixlib.storage`) there is no rename: the group is written in place and
the pointer is one object written whole, so ``complete`` and the pointer alone keep readers safe.
"""

import json
import os

import numpy as np

from .errors import InputError
from .storage import is_local, location, remove_tree, zarr_store

POINTER = "LATEST"


def write_group(path, arrays, attrs):
    """Write arrays and JSON attributes as the Zarr group ``path`` (which must not exist), crash-safely.

    Parameters
    ----------
    path : Path or UPath
    arrays : dict name -> ndarray (numbers, or strings stored as variable-length UTF-8); '/' in a name nests
    attrs : dict of JSON values
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
    group.attrs.update({"attrs": attrs, "complete": True})
    if temporary != path:
        temporary.rename(path)
        _fsync_folder(path.parent)


def read_group(path):
    """``(arrays, attrs)`` of a group written by :func:`write_group`; InputError if absent or incomplete."""
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
              if isinstance(node, zarr.Array)}
    return arrays, dict(group.attrs["attrs"])


def _plain(values):
    """numpy values as written: variable-length strings come back as ``str`` arrays."""
    values = np.asarray(values)
    return np.array(values.tolist(), dtype=str) if values.dtype.kind == "T" else values


def point_to(folder, name, pointer=POINTER):
    """Make ``folder/pointer`` name ``name`` (atomically replaced; at a URL, one object written whole)."""
    if not is_local(folder):
        (folder / pointer).write_text(name + "\n")
        return
    temporary = folder / f".{pointer}.tmp"
    with open(temporary, "w") as f:
        f.write(name + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, folder / pointer)
    _fsync_folder(folder)


def pointed(folder, pointer=POINTER):
    """The name that ``folder/pointer`` holds, or None without a pointer."""
    try:
        return (folder / pointer).read_text().strip() or None
    except FileNotFoundError:
        return None


def writable_folder(folder, flag):
    """Create ``folder`` if needed and write a file in it, or raise InputError naming ``flag``: a real write, as
    permissions alone miss read-only and virtual file systems (and root)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-probe"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise InputError(f"cannot write to {flag} {folder} ({e.strerror}); choose a writable folder") from None


def _fsync_folder(folder):
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class Checkpoints:
    """A folder of checkpoints ``step-NNNNNN`` of one training run and a ``LATEST`` pointer to the last good one.

    Every checkpoint carries a fingerprint (a hash of the config and the data); :meth:`load` refuses one with
    another fingerprint.
    """

    def __init__(self, folder, fingerprint):
        self.folder, self.fingerprint = location(folder, "--checkpoint-dir"), fingerprint

    def check_writable(self):
        """InputError now, before training, if checkpoints cannot be written to the folder."""
        writable_folder(self.folder, "--checkpoint-dir")

    def save(self, step, arrays, scalars):
        """Write the checkpoint of ``step``, point LATEST at it and remove the older ones."""
        name = f"step-{step:06d}"
        if pointed(self.folder) != name:
            remove_tree(self.folder / name)  # left by a run killed between writing it and moving the pointer
        write_group(self.folder / name, arrays, {"fingerprint": self.fingerprint, "scalars": scalars})
        point_to(self.folder, name)
        for old in self.folder.glob("step-*"):
            if old.name != name:
                remove_tree(old)

    def load(self):
        """``(arrays, scalars)`` of the last good checkpoint, or None when there is none."""
        name = pointed(self.folder)
        if name is None:
            return None
        arrays, attrs = read_group(self.folder / name)
        if attrs["fingerprint"] != self.fingerprint:
            raise InputError(f"the checkpoint in {self.folder} comes from another config or other ratings; rerun "
                             "without --resume to start again, or with the config and ratings it was made with")
        return arrays, attrs["scalars"]

    def clear(self):
        """Remove every checkpoint (after a finished run)."""
        remove_tree(self.folder)


def fingerprint(settings, *arrays):
    """A hex SHA-256 of JSON-able ``settings`` (dict) and the bytes of ``arrays``."""
    import hashlib

    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(str((array.dtype.str, array.shape)).encode())
        digest.update(array.data if array.dtype.kind not in "USTO" else "\0".join(map(str, array.ravel())).encode())
    return digest.hexdigest()
