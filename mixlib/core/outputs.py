"""Staged outputs: check an output path before any work, write under a temporary name, rename into place.

A job's outputs are checked before any heavy work (:func:`check_output`), written under temporary names and
renamed into place at the end (:func:`staged_outputs`), so a failed job leaves nothing behind and a reader never
sees half a file. Zarr outputs at an fsspec URL are written in place, as object stores cannot rename.
"""

import contextlib
import json
import logging
import math
import os
import tempfile

from .errors import InputError
from .storage import is_local, location, remove_tree

log = logging.getLogger("mixlib")


def check_output(path, overwrite, suffixes):
    """Reject an output path before any work: an unknown format, a file that exists without
    ``overwrite``, a folder where a file is wanted, or a folder that cannot be written. Only Zarr outputs go to
    URLs (:mod:`mixlib.core.storage`)."""
    _check_not_a_folder(path, suffixes)
    if path.suffix.lower() not in suffixes:
        raise InputError(f"output {path} has an unknown format; use one of {', '.join(suffixes)}")
    if path.exists() and not overwrite:
        raise InputError(f"output {path} exists; pass --overwrite to replace it")
    if not is_local(path) and path.suffix.lower() != ".zarr":
        raise InputError(f"output {path}: only Zarr outputs are written to URLs; give a local path")
    writable_folder(path.parent, f"output {path}: folder")


def optional_output(name, overwrite, suffixes, flag="output"):
    """The checked location (:func:`check_output`) of an output the command writes only when it is named; None for
    an empty name."""
    if not name:
        return None
    path = location(name, flag)
    check_output(path, overwrite, suffixes)
    return path


FOLDER_SUFFIXES = (".zarr", ".parquet")  # outputs that are folders: a Zarr store, a Parquet dataset of part files


def _check_not_a_folder(path, suffixes):
    """Refuse an output that names a folder, or nothing with a suffix: the output is a file (or a Zarr folder)
    named with its format's suffix."""
    names = ", ".join(suffixes[:-1]) + f" or {suffixes[-1]}" if len(suffixes) > 1 else suffixes[0]
    example = f"{path}/NAME{suffixes[0]}"
    if path.is_dir() and not (path.suffix.lower() in FOLDER_SUFFIXES and path.suffix.lower() in suffixes):
        raise InputError(f"output {path}/ is a folder; give a file name ending in {names} (for example {example})")
    if not path.suffix:
        raise InputError(f"output {path} has no suffix to say its format; give a file name ending in {names} "
                         f"(in a folder: {example})")


def temporary_path(path):
    """A hidden sibling name, with the same suffix, to write ``path`` under before renaming it."""
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")


@contextlib.contextmanager
def staged_outputs():
    """Write a job's outputs under temporary names, then rename them all into place; on failure remove them.

    Yields ``stage(final) -> Path``, the temporary path to write ``final`` under (its folder is created);
    ``stage.discard(final)`` drops one that is not wanted after all. A Zarr
    output at a URL is written in place, as object stores cannot rename (the old one, which ``--overwrite``
    allowed, is removed first); on failure it is removed all the same.
    """
    staged = {}

    def stage(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        if not is_local(final):
            remove_path(final)
        staged[final] = temporary_path(final) if is_local(final) else final
        return staged[final]

    def discard(final):
        """Drop an output staged for ``final``: it is removed, not moved into place."""
        remove_path(staged.pop(final))

    stage.discard = discard
    try:
        yield stage
        while staged:
            final, temporary = staged.popitem()
            if temporary != final:
                move_into_place(temporary, final)
    finally:
        for temporary in staged.values():
            remove_path(temporary)


def move_into_place(temporary, final):
    """Rename ``temporary`` to ``final``; a folder (Zarr, a Parquet dataset) that exists, or a file where a folder
    goes, is replaced whole."""
    if final.exists() and (final.is_dir() or temporary.is_dir()):  # a folder replaces a file, or the other way
        old = final.with_name(f".{final.name}.old")
        final.rename(old)
        temporary.rename(final)
        remove_path(old)
    else:
        temporary.replace(final)


def remove_path(path):
    """Remove a file or a folder (a Zarr store) if it exists."""
    if path.is_dir():
        remove_tree(path)
    elif path.exists():
        path.unlink()


def writable_folder(folder, flag):
    """Raise InputError naming ``flag`` unless files can be written in ``folder``, by a real write (permissions
    alone miss read-only and virtual file systems, and root). Nothing is left behind: a local folder that does not
    exist yet is not created; its nearest existing parent is probed (the job makes the folder when it writes)."""
    existing = nearest_existing(folder)
    try:
        if is_local(folder):
            with tempfile.TemporaryFile(dir=existing):
                pass
        else:  # at a URL: write and remove an object there, and the folders it needed (on a file system)
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / ".write-probe"
            probe.write_text("")
            probe.unlink()
            made = folder
            while made != existing and made.exists():
                made.rmdir()
                made = made.parent
    except OSError as e:
        raise InputError(f"cannot write to {flag} {folder} ({e.strerror}); choose a writable folder") from None


def nearest_existing(folder):
    """``folder`` if it exists, else its nearest ancestor that does."""
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return folder


def remove_new_folders(new_folders):
    """Remove what a run created and left empty: for each ``(folder, ancestor)`` of ``new_folders``, ``folder``
    and its parents below ``ancestor`` (which existed before the run), while they are empty. Local folders only
    (an object store has no empty folders)."""
    for folder, ancestor in new_folders:
        while is_local(folder) and folder != ancestor and ancestor in folder.parents:
            if folder.exists():
                if any(folder.iterdir()):
                    break
                folder.rmdir()
                log.debug("removed the empty folder %s", folder)
            folder = folder.parent


def json_text(values):
    """``values`` (a dict of JSON values and floats) as indented JSON text, with NaN and infinities as null (JSON
    has no such numbers; strict readers refuse them)."""
    def finite(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: finite(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [finite(v) for v in value]
        return value

    return json.dumps(finite(values), indent=2, allow_nan=False) + "\n"
