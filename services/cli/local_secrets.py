"""The two secrets of a local installation, made once by `certfleet init` and kept in
var/secrets.env (mode 0600), which `certfleet stack run` and `certfleet doctor` read.

This is the first-hour way: one command and the services run. The production way is the
environment (a secret store, docker-compose's .env, a Kubernetes Secret): a variable that is
set always wins over the file, and when both secrets come from the environment no file is
written at all."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path

from shared.files import write_private

FILE_NAME = "secrets.env"
NAMES = ("CERTFLEET_CA_KEY_PASSPHRASE", "CERTFLEET_DATA_KEY")


def path_of(environ: Mapping[str, str]) -> Path:
    return Path(environ.get("CERTFLEET_VAR_DIR") or "var") / FILE_NAME


def read(path: Path) -> dict[str, str]:
    """The KEY=VALUE lines of the file (none if there is no file)."""
    if not path.is_file():
        return {}
    values = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key in NAMES and value:
            values[key] = value
    return values


def merged(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment with the file's secrets where the environment has none."""
    return {**read(path_of(environ)), **{k: v for k, v in environ.items() if v}}


def ensure(environ: Mapping[str, str]) -> Path | None:
    """Make the secrets the environment does not give, once, in the file; return the file's
    path when it holds any (None: both come from the environment)."""
    path = path_of(environ)
    kept = read(path)
    missing = [n for n in NAMES if not environ.get(n) and n not in kept]
    if missing:
        values = {**kept, **{n: secrets.token_urlsafe(32) for n in missing}}
        write_private(path, "".join(f"{k}={v}\n" for k, v in values.items()))
        kept = values
    return path if kept else None
