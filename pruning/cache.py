"""The on-disk cache of trained models and runs: atomic writes, checked reads, a size cap.

Every entry is written to a temporary file beside its path and renamed into place, so a reader
(another thread, session or process) sees either the old entry or the whole new one; two
writers of the same entry each rename a complete file, the last one wins. A read that fails
for any reason (truncated, corrupt, wrong format) returns None and the caller rebuilds the
entry. Reading an entry marks it used (its modification time); when the cache grows past its
cap (``PRUNING_CACHE_MAX_MB``, default 2048) the least recently used entries are evicted.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

DEFAULT_MAX_MB = 2048
STALE_TEMPORARY_SECONDS = 3600  # a temporary file this old belongs to a writer that died


def cache_dir() -> Path:
    """``PRUNING_CACHE_DIR`` or ``.cache/pruning`` in the repository (git-ignored)."""
    default = Path(__file__).resolve().parent.parent / ".cache" / "pruning"
    return Path(os.environ.get("PRUNING_CACHE_DIR", default))


def max_bytes() -> int:
    """The cache's size cap from ``PRUNING_CACHE_MAX_MB`` (a bad value falls back to the default)."""
    try:
        megabytes = float(os.environ.get("PRUNING_CACHE_MAX_MB", DEFAULT_MAX_MB))
    except ValueError:
        megabytes = DEFAULT_MAX_MB
    return int(max(megabytes, 0) * 2**20)


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj, path: str | Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: never half a file."""
    _atomic_write(Path(path), lambda stream: torch.save(obj, stream))


def atomic_write_bytes(data: bytes, path: str | Path) -> None:
    """``data`` to a temporary file beside ``path``, then rename: never half a file."""
    _atomic_write(Path(path), lambda stream: stream.write(data))


def save_entry(obj, path: Path) -> None:
    """Write a cache entry (tensors, plain containers) atomically, then keep the cache under its cap."""
    atomic_torch_save(obj, path)
    enforce_cap(keep=path)


def save_json_entry(obj, path: Path) -> None:
    """Write a JSON cache entry atomically, then keep the cache under its cap."""
    _atomic_write(path, lambda stream: stream.write(json.dumps(obj).encode()))
    enforce_cap(keep=path)


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:
        pass  # evicted meanwhile: the entry read is still good


def load_entry(path: Path):
    """The entry at ``path`` (tensors only: ``weights_only``), or None if missing or unreadable."""
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # missing, truncated or corrupt: rebuilt, never trusted
        return None
    _touch(path)
    return entry


def load_json_entry(path: Path):
    """The JSON entry at ``path``, or None if missing or unreadable."""
    try:
        entry = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    _touch(path)
    return entry


@dataclass(frozen=True)
class CacheUsage:
    folder: Path
    files: int
    bytes: int
    max_bytes: int


def _entries(folder: Path) -> list[tuple[Path, os.stat_result]]:
    entries = []
    for path in folder.rglob("*"):
        try:
            info = path.stat()
        except OSError:
            continue  # renamed or removed by another process while we looked
        if path.is_file():
            entries.append((path, info))
    return entries


def usage() -> CacheUsage:
    folder = cache_dir()
    entries = _entries(folder) if folder.exists() else []
    return CacheUsage(folder, len(entries), sum(info.st_size for _, info in entries), max_bytes())


def enforce_cap(keep: Path | None = None, limit: int | None = None) -> list[Path]:
    """Evict least recently used entries until the cache fits ``limit`` (default: the cap);
    ``keep`` (the entry just written) and other writers' fresh temporary files stay. Returns
    the evicted paths."""
    folder = cache_dir()
    if not folder.exists():
        return []
    limit = max_bytes() if limit is None else limit
    now = time.time()
    entries = []
    for path, info in _entries(folder):
        if path.name.endswith(".tmp"):
            if now - info.st_mtime > STALE_TEMPORARY_SECONDS:
                path.unlink(missing_ok=True)
            continue
        entries.append((path, info))
    total = sum(info.st_size for _, info in entries)
    evicted = []
    for path, info in sorted(entries, key=lambda entry: entry[1].st_mtime):
        if total <= limit:
            break
        if keep is not None and path == Path(keep):
            continue
        path.unlink(missing_ok=True)
        total -= info.st_size
        evicted.append(path)
    return evicted


def clear() -> int:
    """Remove every cache entry (not other writers' temporary files); returns how many."""
    return len(enforce_cap(limit=0))
