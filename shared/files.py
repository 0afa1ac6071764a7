"""Files and directories that hold what only certfleet's own user may read: the var/
directory (SQLite database, admin token, logs) is made 0700, its secret files 0600."""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_dir(path: Path) -> Path:
    """Create `path` and each missing parent with mode 0700 (Path.mkdir gives the parents
    the default mode). An existing directory is left as it is: it may be a share."""
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        directory.mkdir(mode=PRIVATE_DIR, exist_ok=True)
        os.chmod(directory, PRIVATE_DIR)  # the umask may have narrowed it; never widened
    return path


def private_file(path: Path) -> Path:
    """Create `path` (if missing) with mode 0600 and make sure it has that mode."""
    private_dir(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)
    finally:
        os.close(fd)
    return path


def write_private(path: Path, text: str) -> Path:
    """Replace the file's content with `text`; the file is 0600 before any byte is in it
    (never readable by others, not even for a moment)."""
    private_file(path)
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return path
