"""Content fingerprints of data files, and the atomic file write every cache here relies on.

``file_fingerprint(path)`` is the sha256 of the file's bytes. Hashing a 4 GB MOSEI pickle takes
seconds, so results are cached in ``cache_dir()/fingerprints.json`` keyed by the absolute path
and validated by size and ``mtime_ns``: a file changed in place is hashed again. The cache is a
pure optimisation: a corrupt or unreadable cache file is ignored and rewritten.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Callable

from dlf.errors import DLFError
from dlf.resources import cache_dir

_CACHE_NAME = "fingerprints.json"
_MAX_ENTRIES = 2000  # oldest entries are dropped beyond this, so the cache stays small
_CHUNK = 1 << 20


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Write ``path`` through ``write(fileobj)`` into a temp file, then ``os.replace`` it.

    A reader never sees a half-written file, and a process killed mid-write leaves the old
    file (or none) in place plus at most a stray ``.<name>.*.tmp`` next to it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_output_file(path: str | os.PathLike, option: str, example: str = "predictions.csv") -> Path:
    """Refuse, before any long work, an output path that :func:`atomic_write` could not replace:
    an existing folder, a file where a parent folder should be, or an unwritable folder."""
    path = Path(path)
    if path.is_dir():
        raise DLFError(f"{option} {path}: is a folder; give a file name, e.g. {path / example}")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:  # atomic_write creates missing folders
        folder = folder.parent
    if not folder.is_dir():
        raise DLFError(f"{option} {path}: {folder} is a file, not a folder; choose another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DLFError(f"{option} {path}: folder {folder} is not writable; choose another path")
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_fingerprint(path: str | os.PathLike) -> str:
    """sha256 hex digest of the file content, cached by (absolute path, size, mtime_ns)."""
    p = Path(path).expanduser().resolve()
    try:
        st = p.stat()
    except OSError as err:
        raise DLFError(f"{p}: cannot fingerprint ({err.strerror or err}); check the path") from None
    if not p.is_file():
        raise DLFError(f"{p}: not a regular file; pass the path of a data file")
    cache = _read_cache()
    entry = cache.get(str(p))
    if isinstance(entry, dict) and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
        sha = entry.get("sha256")
        if isinstance(sha, str) and len(sha) == 64:
            return sha
    sha = sha256_file(p)
    cache.pop(str(p), None)
    cache[str(p)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}
    _write_cache(dict(list(cache.items())[-_MAX_ENTRIES:]))
    return sha


def _cache_path() -> Path:
    return cache_dir() / _CACHE_NAME


def _read_cache() -> dict:
    try:
        data = json.loads(_cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, unreadable or corrupt: start afresh
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(cache: dict) -> None:
    payload = json.dumps(cache, indent=0, sort_keys=False).encode("utf-8")
    try:
        atomic_write(_cache_path(), lambda fh: fh.write(payload))
    except OSError:  # a read-only cache folder only costs re-hashing next time
        pass
