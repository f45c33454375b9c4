"""Where jobs keep Zarr data: local paths, or fsspec URLs (``s3://``, ``gs://``, ``file://``...) for storage that a
remote cluster's workers and the client share.

A location is a ``pathlib.Path`` for a local path and a ``upath.UPath`` for a URL: the same interface over an
fsspec filesystem, so most code that reads and writes is the same for both. What differs: a local folder is
written under a temporary name and renamed into place (atomic); an object store has no rename (fsspec would copy
every object), so there a Zarr group is written in place. Readers stay safe either way: they never trust a
checkpoint or model group before its ``complete`` attribute and the pointer that names it (a pointer is one
object, replaced whole; see :mod:`mixlib.core.checkpoint`), and a job removes a partial output when it fails.
"""

import shutil
from pathlib import Path

from .errors import InputError

LOCAL_PROTOCOLS = ("", "file", "local")


def location(name, flag):
    """A ``pathlib.Path`` for a local path, a ``UPath`` for an fsspec URL; a local path is made absolute (and ``~``
    expanded) here, in the client's process, so that a worker of a remote cluster, whose working directory is
    another, reads and writes the same file.

    Parameters
    ----------
    name : str or path-like
    flag : str, the option that named it (for error messages)

    Raises InputError for an unknown protocol or one whose fsspec package is not installed.
    """
    name = str(name)
    if "://" not in name:  # a local path: pathlib's, without importing fsspec (a small job's start-up)
        return Path(name).expanduser().absolute()
    from upath import UPath

    local_url = "://" in name and name.split("://", 1)[0] in LOCAL_PROTOCOLS[1:]
    try:
        path = UPath(name, auto_mkdir=True) if local_url else UPath(name)  # auto_mkdir: Zarr writes a chunk's
        path.fs  # noqa: B018  (the filesystem is made lazily: fail now, not at the first write)
        return path.expanduser().absolute() if is_local(path) else path  # file without making its folder
    except ImportError as e:  # fsspec names the package to install: "Install s3fs to access S3"
        raise InputError(f"{flag} {name}: {e}") from None
    except ValueError as e:
        raise InputError(f"{flag} {name}: {e}; give a local path or an fsspec URL (s3://, gs://, file://)") from None


def is_local(path):
    """True for a local path (a plain ``pathlib.Path``), False for a URL location."""
    return getattr(path, "protocol", "") == ""


def zarr_store(path, read_only=False):
    """What ``zarr.open*`` takes for ``path``: the path string when local, else an fsspec store."""
    if is_local(path):
        return str(path)
    from zarr.storage import FsspecStore

    # from_url, not from_upath: it wraps synchronous filesystems (file://, memory://) for Zarr's async API.
    return FsspecStore.from_url(str(path), storage_options=dict(path.storage_options), read_only=read_only)


def remove_tree(path):
    """Remove a folder and everything below it, if it exists."""
    if is_local(path):
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.rmdir(recursive=True)


def tree_bytes(path):
    """Bytes of a file, or of all files below a folder (a Zarr store)."""
    if not is_local(path):
        return path.fs.du(path.path, total=True)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def check_workers_see(client, reads=(), writes=()):
    """Raise InputError unless every worker of ``client`` sees the local files the client sees.

    A worker of a remote cluster that sees another file at the same path (another machine's disk, a folder of
    its own) would read another image or write where the client never looks: a wrong result with no error. URLs
    are not checked: fsspec storage is the same for every process that can reach it.

    Parameters
    ----------
    client : distributed.Client
    reads : iterable of Path, files or folders the workers will read: each must exist on every worker with the
        same size (a folder: the names and sizes of its entries)
    writes : iterable of Path, folders the workers will write into: a file the client writes in each (or in its
        nearest existing parent) must be there, with the same contents, for every worker
    """
    import secrets

    reads = [p for p in reads if is_local(p)]
    probes = {}
    try:
        for folder in (p for p in writes if is_local(p)):
            while not folder.exists():
                folder = folder.parent
            probe = folder / f".mixlib-probe-{secrets.token_hex(8)}"
            probe.write_text(probe.name)
            probes[probe] = folder
        expected = [_signature(p) for p in reads + list(probes)]
        seen = client.run(_signatures, [str(p) for p in reads + list(probes)])
    finally:
        for probe in probes:
            probe.unlink(missing_ok=True)
    for worker, signatures in seen.items():
        for path, want, got in zip(reads + list(probes), expected, signatures):
            if got != want:
                shown = probes.get(path, path)
                what = ("does not see a file this process wrote there" if path in probes else
                        "finds no such file" if got is None else "sees another file there")
                raise InputError(f"the workers cannot see {shown} as this process does (worker {worker} {what}): "
                                 "use storage the client and the workers share, under the same path, or an "
                                 "fsspec URL")


def _signatures(paths):
    """:func:`_signature` of each path, computed where this runs (on a worker, through ``Client.run``)."""
    from pathlib import Path

    return [_signature(Path(p)) for p in paths]


def _signature(path, most=256):
    """What identifies a file across machines without reading it whole: its size, or for a folder the names and
    sizes of (at most ``most`` of) its entries; a probe file: its contents. None when it does not exist."""
    try:
        if path.name.startswith(".mixlib-probe-"):
            return path.read_text()
        if path.is_dir():
            entries = sorted(path.iterdir())[:most]
            return [[p.name, p.stat().st_size if p.is_file() else -1] for p in entries]
        return path.stat().st_size
    except OSError:
        return None
