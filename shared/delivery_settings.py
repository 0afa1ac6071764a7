"""A host's delivery settings, typed per method: what an operator may write, and the limits
the distributor's own configuration sets.

Each method has one marshmallow schema: unknown keys are refused and every value is bounded.
Nothing an operator writes names a resource of the distributor's machine directly:

- a secret, an SSH key file or a CA file is named by an environment variable of the
  distributor, and only variables whose names start with SECRET_ENV_PREFIX can be named, so
  that no setting can reach CERTFLEET_CA_KEY_PASSPHRASE, CERTFLEET_DATA_KEY or any other
  variable of the process; the workers hand their targets only those variables;
- a directory target writes only inside the directory roots of the deployment
  (CERTFLEET_DELIVERY_ROOTS), checked here when the host is saved and again by the
  distributor, on the resolved path, before it writes;
- an SSH target connects only to one of the host's own registered names or addresses, which
  no other host may hold (shared.db.models.HostName).

The API validates with `check_delivery` when a host is saved (routes and inventory alike), and
the distributor's targets parse the stored settings with the same schemas.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import marshmallow as ma

from shared.destinations import DestinationPolicy, DestinationRefused
from shared.errors import ValidationFailed

SECRET_ENV_PREFIX = "CERTFLEET_SECRET_"
ENV_NAME = re.compile(rf"^{SECRET_ENV_PREFIX}[A-Z0-9_]{{1,100}}\Z")
MAX_PATH = 1024
LAYOUTS = ("host", "flat")


def secret_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """The only environment variables a worker hands its targets and channels."""
    return {k: v for k, v in environ.items() if ENV_NAME.match(k)}


def env_name(**kwargs: Any) -> ma.fields.String:
    return ma.fields.String(
        validate=ma.validate.Regexp(
            ENV_NAME, error=f"name an environment variable that starts with {SECRET_ENV_PREFIX}"
        ),
        **kwargs,
    )


def _clean_path(value: str) -> None:
    if "\0" in value or any(part == ".." for part in value.split("/")):
        raise ma.ValidationError("the path may not contain NUL or '..'")


def _absolute_path(value: str) -> None:
    if not value.startswith("/"):
        raise ma.ValidationError("use an absolute path")
    _clean_path(value)


def path_field(**kwargs: Any) -> ma.fields.String:
    return ma.fields.String(
        validate=[ma.validate.Length(min=1, max=MAX_PATH), _absolute_path], **kwargs
    )


def root_path_field(**kwargs: Any) -> ma.fields.String:
    """A directory on this deployment: absolute, or relative to the first delivery root
    (resolve_directory makes it absolute before it is stored)."""
    return ma.fields.String(
        validate=[ma.validate.Length(min=1, max=MAX_PATH), _clean_path], **kwargs
    )


class StrictFloat(ma.fields.Float):
    """A JSON number, not a string that looks like one."""

    def _validated(self, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.make_error("invalid")
        return super()._validated(value)


def flag(**kwargs: Any) -> ma.fields.Boolean:
    """A JSON true or false, not "yes" or 1."""
    return ma.fields.Boolean(truthy={True}, falsy={False}, load_default=False, **kwargs)


class _Strict(ma.Schema):
    class Meta:
        unknown = ma.RAISE


class NoSettings(_Strict):
    """`none` and `agent`: nothing to set (the agent pulls with its own token)."""


class DirectorySettings(_Strict):
    path = root_path_field(
        required=True,
        metadata={"description": "inside a delivery root: absolute, or relative to the first root"},
    )
    layout = ma.fields.String(load_default="host", validate=ma.validate.OneOf(LAYOUTS))
    group_readable = flag()
    pfx_password_env = env_name(load_default=None)


OPENSSH_LINE = re.compile(r"^[a-z0-9@.-]{3,64} [A-Za-z0-9+/=]{16,16384}( [^\n]{0,200})?\Z")


class SshSettings(_Strict):
    host = ma.fields.String(
        required=True,
        validate=ma.validate.Length(min=1, max=253),
        metadata={"description": "one of the host's own DNS names or IP addresses"},
    )
    port = ma.fields.Integer(
        load_default=22, strict=True, validate=ma.validate.Range(min=1, max=65535)
    )
    username = ma.fields.String(
        required=True, validate=ma.validate.Regexp(r"^[A-Za-z0-9._][A-Za-z0-9._-]{0,63}\Z")
    )
    path = path_field(required=True, metadata={"description": "directory on the host"})
    host_key = ma.fields.String(
        required=True,
        validate=ma.validate.Regexp(
            OPENSSH_LINE, error='use an OpenSSH line "ssh-ed25519 AAAA..."'
        ),
    )
    key_file_env = env_name(required=True, metadata={"description": "holds the key file's path"})
    reload_command = ma.fields.String(
        load_default=None, allow_none=True, validate=ma.validate.Length(min=1, max=2000)
    )
    group_readable = flag()
    pfx_password_env = env_name(load_default=None)


class WebhookSettings(_Strict):
    url = ma.fields.Url(
        required=True,
        schemes={"https"},
        require_tld=False,
        error_messages={"invalid": "use an https:// URL"},
        validate=ma.validate.Length(max=2000),
    )
    secret_env = env_name(required=True)
    include_key = flag()
    ca_file_env = env_name(load_default=None, metadata={"description": "holds a CA file's path"})
    timeout = StrictFloat(load_default=None, validate=ma.validate.Range(min=0.1, max=300))


SCHEMAS: dict[str, type[ma.Schema]] = {
    "none": NoSettings,
    "agent": NoSettings,
    "directory": DirectorySettings,
    "ssh": SshSettings,
    "webhook": WebhookSettings,
}


@dataclass(frozen=True)
class DeliveryLimits:
    """What this deployment lets delivery settings reach (from Settings)."""

    directory_roots: tuple[Path, ...] = ()
    destinations: DestinationPolicy = field(default_factory=DestinationPolicy)

    def check_destination(self, host: str, setting: str) -> None:
        """Refuse an address literal the workers would refuse to connect to, now."""
        try:
            self.destinations.check_literal(host)
        except DestinationRefused as exc:
            raise ValidationFailed(exc.message, {setting: [exc.category]}) from exc

    def within_roots(self, path: str) -> bool:
        """Whether `path` lies in a delivery root (the roots are absolute, so a relative
        path lies in none)."""
        candidate = Path(posixpath.normpath(path))
        return any(candidate == root or root in candidate.parents for root in self.directory_roots)


def parse_settings(method: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of `method`, typed, with defaults; ValidationFailed naming each problem."""
    schema = SCHEMAS.get(method)
    if schema is None:
        raise ValidationFailed(f"unknown delivery method {method!r}", {"method": ["unknown"]})
    if not isinstance(settings, Mapping):
        raise ValidationFailed(
            "delivery settings must be an object", {"settings": ["not an object"]}
        )
    try:
        loaded: dict[str, Any] = schema().load(dict(settings))
    except ma.ValidationError as exc:
        raise ValidationFailed(
            f"the {method} delivery settings did not validate",
            {"settings": exc.normalized_messages()},  # type: ignore[no-untyped-call]
        ) from exc
    return {k: v for k, v in loaded.items() if v is not None}


def resolve_directory(delivery: Mapping[str, Any], limits: DeliveryLimits) -> dict[str, Any]:
    """A directory target's relative path made absolute, under the first delivery root (an
    inventory can then name `branch-aarhus` wherever the deployment keeps its deliveries);
    any other delivery as it is."""
    settings = delivery.get("settings") or {}
    path = settings.get("path")
    if delivery.get("method") != "directory" or not isinstance(path, str) or path.startswith("/"):
        return dict(delivery)
    if not limits.directory_roots:
        raise ValidationFailed(
            "a relative directory needs a delivery root (CERTFLEET_DELIVERY_ROOTS)",
            {"settings": {"path": ["no delivery root to be relative to"]}},
        )
    absolute = posixpath.normpath(posixpath.join(str(limits.directory_roots[0]), path))
    return {**delivery, "settings": {**settings, "path": absolute}}


def check_delivery(
    delivery: Mapping[str, Any], names: Iterable[str], limits: DeliveryLimits
) -> dict[str, Any]:
    """A host's delivery ({"method", "settings"}) checked against its own `names` and the
    deployment's limits; the stored (normalized) form."""
    method = str(delivery.get("method") or "none")
    settings = parse_settings(method, delivery.get("settings") or {})
    if method == "directory" and not limits.within_roots(settings["path"]):
        roots = ", ".join(str(r) for r in limits.directory_roots) or "none configured"
        raise ValidationFailed(
            f"the directory must lie inside a delivery root ({roots}; CERTFLEET_DELIVERY_ROOTS)",
            {"settings": {"path": ["outside the delivery roots"]}},
        )
    if method == "ssh":
        if settings["host"].lower().strip("[]") not in set(names):
            raise ValidationFailed(
                "the ssh target must connect to one of the host's own names or addresses",
                {"settings": {"host": ["not one of the host's names"]}},
            )
        limits.check_destination(settings["host"], "settings.host")
    if method == "webhook":
        limits.check_destination(urlsplit(settings["url"]).hostname or "", "settings.url")
    return {"method": method, "settings": settings}


def effective_directory(delivery: Mapping[str, Any], host_name: str) -> str | None:
    """Where a directory target writes this host's files (None for other methods). No two
    hosts may share it (hosts.delivery_directory is unique): otherwise an operator of one
    site could point its host's files over another site's host's."""
    if delivery.get("method") != "directory":
        return None
    settings = delivery.get("settings") or {}
    path = posixpath.normpath(str(settings.get("path", "")))
    return path if settings.get("layout", "host") == "flat" else posixpath.join(path, host_name)


def endpoint_host(endpoint: str) -> str:
    """The host part of a `host:port` TLS endpoint ([v6]:port too), lower-cased."""
    host, _, _ = endpoint.rpartition(":")
    return host.strip("[]").lower()


def resolved_within(path: str, roots: Iterable[Path]) -> bool:
    """For the distributor: does `path`, with every symbolic link resolved, lie inside one of
    the roots (themselves resolved)? A link inside a root that points out of it does not."""
    real = Path(os.path.realpath(path))
    for root in roots:
        base = Path(os.path.realpath(root))
        if real == base or base in real.parents:
            return True
    return False
