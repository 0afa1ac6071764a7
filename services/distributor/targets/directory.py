"""The directory target: write a host's files into a directory of the distributor (a local
folder or a mounted share that the host, or its own tooling, picks them up from).

Settings (shared.delivery_settings.DirectorySettings):
    path              absolute directory inside one of the deployment's delivery roots
                      (CERTFLEET_DELIVERY_ROOTS); created (with its parents) when missing
    layout            "host" (default): the files go to <path>/<host name>/; "flat": to <path>
    group_readable    false (default); true makes the public files 0640 instead of 0644
    pfx_password_env  optional CERTFLEET_SECRET_* variable: also write a PFX with it

The directory, with every symbolic link resolved, must still lie inside a root when the files
are written: a link planted inside a root cannot lead the target out of it.

Every file is written beside its final name, with its final mode from the moment it exists,
fsynced, and renamed over the old file; the directory is fsynced after the renames. A reader
therefore sees the old file or the new one, never a partial one, and a key file is never
readable by anyone but its owner, not even for an instant. The set of files is not replaced as
one unit: the key is written first and the certificate last, so a reader that sees the new
certificate also finds its key.

This target runs no reload step, so `installed` is always false; a `reload_command` in the
settings is refused (unknown key) rather than silently ignored (use the ssh target or the
agent).

Errors: bad settings, and OS errors that only an operator can clear (permission denied,
read-only file system, a file where the directory should be), are permanent. Every other OS
error (no space left, an I/O error, a stale NFS handle) is retryable: it can clear by itself.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from services.distributor.targets.base import (
    CERT_FILE,
    CHAIN_FILE,
    FULLCHAIN_FILE,
    KEY_FILE,
    PFX_FILE,
    TRUST_FILE,
    Bundle,
    Delivered,
    TargetError,
    parse_settings,
)
from shared.delivery_settings import resolved_within

DIRECTORY_MODE = 0o755
# Keys before the certificate that needs them; the certificate last of all.
INSTALL_ORDER = (KEY_FILE, PFX_FILE, CHAIN_FILE, FULLCHAIN_FILE, TRUST_FILE, CERT_FILE)
PERMANENT_ERRNOS = frozenset(
    {
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.EEXIST,
        errno.ENAMETOOLONG,
        errno.ELOOP,
    }
)


def install_order(files: Mapping[str, tuple[bytes, int]]) -> list[tuple[str, tuple[bytes, int]]]:
    """`Bundle.files()` in the order file-based targets write them (see INSTALL_ORDER)."""

    def rank(name: str) -> int:
        return INSTALL_ORDER.index(name) if name in INSTALL_ORDER else len(INSTALL_ORDER)

    return sorted(files.items(), key=lambda item: rank(item[0]))


def temp_name(name: str) -> str:
    """A hidden name beside `name` for the file being written (no `*.pem` glob matches it)."""
    return f".{name}.tmp-{secrets.token_hex(6)}"


def write_atomic(directory: Path, name: str, content: bytes, mode: int) -> None:
    """Create a temporary file with `mode`, fill and fsync it, then rename it over `name`."""
    tmp = directory / temp_name(name)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, mode)
    try:
        try:
            # The umask may have narrowed the mode (never widened it): set it exactly.
            os.fchmod(fd, mode)
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, directory / name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def fsync_directory(directory: Path) -> None:
    """Make the renames durable: they live in the directory's own entries."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DirectoryTarget:
    method = "directory"

    def __init__(self, roots: Sequence[Path] = ()) -> None:
        """`roots`: the only directories (and their subdirectories) this target writes in."""
        self.roots = tuple(roots)

    def deliver(self, bundle: Bundle, settings: Mapping[str, Any]) -> Delivered:
        config = parse_settings(self.method, settings)
        if not config["path"].startswith("/"):
            # The API stores a relative path resolved against its first delivery root
            # (shared.delivery_settings.resolve_directory): this one did not come through it.
            raise TargetError(
                f"use an absolute path, not {config['path']!r}: the API resolves a relative one "
                "when the host is saved",
                retryable=False,
            )
        directory = self._directory(bundle, config)
        files = install_order(bundle.files(config["group_readable"]))
        try:
            self._check_inside_roots(directory)
            directory.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
            self._check_inside_roots(directory)  # a link swapped in while it was made
            for name, (content, mode) in files:
                write_atomic(directory, name, content, mode)
            fsync_directory(directory)
        except OSError as exc:
            raise TargetError(
                f"cannot write the files to {directory}: {_describe(exc)}",
                retryable=exc.errno not in PERMANENT_ERRNOS,
            ) from exc
        return Delivered(installed=False, detail=f"wrote {len(files)} files to {directory}")

    def _check_inside_roots(self, directory: Path) -> None:
        if not resolved_within(str(directory), self.roots):
            raise TargetError(
                f"{directory} lies outside the distributor's delivery roots "
                "(CERTFLEET_DELIVERY_ROOTS)",
                retryable=False,
            )

    def _directory(self, bundle: Bundle, config: Mapping[str, Any]) -> Path:
        if config["layout"] == "flat":
            return Path(config["path"])
        name = bundle.host_name
        if not name or name in (".", "..") or any(c in name for c in "/\\\0"):
            raise TargetError(f"the host name {name!r} cannot be a directory name", retryable=False)
        return Path(config["path"]) / name


def _describe(exc: OSError) -> str:
    code = errno.errorcode.get(exc.errno or 0, "error")
    return f"{exc.strerror or exc} ({code})"
