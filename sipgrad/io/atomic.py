"""Atomic file writes: a reader never sees a half-written file."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

from sipgrad.errors import SipgradError

_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process umask (read by setting and restoring it; the lock keeps threads from racing)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _final_mode(target: Path) -> int:
    """The mode a plain ``open(target, "w")`` would give: the existing file's, else 0666 minus the umask."""
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` on success.

    The temporary file lives in the same directory so the final ``os.replace`` is an
    atomic rename on POSIX. If the body raises (or the process is interrupted), the
    temporary file is removed and ``path`` is left untouched. The file ends with the mode
    a normal write gives (the user's umask, or the replaced file's mode), not the 0600
    of the private temporary file.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise SipgradError(f"{target}: cannot be written, {target.parent} (or a folder above it) is a file, "
                           f"not a folder") from None
    if target.is_dir():
        raise SipgradError(f"{target}: is a folder, so a file of that name cannot be written")
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=suffix if suffix is not None else target.suffix + ".tmp",
            dir=target.parent,
        )
    except OSError as error:
        raise _cannot_write(target, error) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, _final_mode(target))
        os.replace(tmp, target)
    except OSError as error:  # a full disk, a quota, a read-only file system: the file is named, not errno alone
        tmp.unlink(missing_ok=True)
        raise _cannot_write(target, error) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _cannot_write(target: Path, error: OSError) -> SipgradError:
    """One line naming the file; numpy's short writes (``N requested and M written``) carry no errno."""
    reason = error.strerror or str(error) or type(error).__name__
    if error.errno is None and "written" in reason:
        reason += "; is the disk full?"
    return SipgradError(f"{target}: cannot be written ({reason})")


def write_json(path: str | os.PathLike, document: Any) -> None:
    """``document`` as indented JSON at ``path``, through ``atomic_write``: the file is whole or absent."""
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(document, indent=2))
