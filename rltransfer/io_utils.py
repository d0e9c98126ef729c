"""Atomic file writes: a reader (or an interruption) never sees half a file."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it over `path`. An
    OSError names `path` (a full disk's, raised by a write, names no file)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise _naming(err, path) from None
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; study files are shared
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise _naming(err, path) from None
        raise


def _naming(err: OSError, path: Path) -> OSError:
    """`err`, naming `path` when it names no file (the same OSError subclass)."""
    if err.filename is not None or err.errno is None:
        return err
    return OSError(err.errno, err.strerror or os.strerror(err.errno), str(path))


# What a disk does wrong mid-study (not the input's fault): the study stops and resumes later.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG,
                            errno.EACCES, errno.EPERM})
_STORAGE_FIX = {errno.ENOSPC: "free some space on its disk",
                errno.EDQUOT: "free some space on its disk (or raise the quota)",
                errno.EFBIG: "free some space on its disk",
                errno.EROFS: "make its disk writable again",
                errno.EIO: "check its disk",
                errno.EACCES: "give this user write access to it again",
                errno.EPERM: "give this user write access to it again"}


@dataclass(frozen=True)
class DiskFault:
    """A disk that failed under a study: what happened (``No space left on device: PATH``)
    and how to fix it (``free some space on its disk``)."""

    reason: str
    fix: str


def disk_fault(err: BaseException | None) -> DiskFault | None:
    """The `DiskFault` when `err`, or an error it was raised from or during, is an OSError
    of a disk that failed (`STORAGE_ERRNOS`); else None."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in STORAGE_ERRNOS:
            text = err.strerror or os.strerror(err.errno or 0)
            reason = f"{text}: {err.filename}" if err.filename else text
            return DiskFault(reason, _STORAGE_FIX[err.errno or 0])
        err = err.__cause__ or err.__context__
    return None


def remove_stale_temporaries(folder: str | Path) -> None:
    """Remove the temporary files of atomic writes cut short by a kill (``.NAME.XXXX.tmp``).
    Call only while no other process writes `folder` (the study lock guarantees that)."""
    for path in Path(folder).glob(".*.tmp"):
        if path.is_file():
            path.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
