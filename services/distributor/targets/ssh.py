"""The SSH target: upload a host's files over SFTP, then run the host's reload command.

Settings (shared.delivery_settings.SshSettings; the private key is named, never stored):
    host            one of the host's own registered DNS names or addresses (no other host may
                    hold it), port (22), username
    path            absolute directory on the host; created (with its parents) when missing
    host_key        the host's public key as an OpenSSH line ("ssh-ed25519 AAAA..."), e.g.
                    from `ssh-keyscan` or /etc/ssh/ssh_host_ed25519_key.pub. Required: the
                    server must present exactly this key, there is no trust on first use
    key_file_env    a CERTFLEET_SECRET_* variable of the distributor holding the path of the
                    private key file (the deployment decides which key files exist)
    reload_command  optional; runs through the user's shell on the host after the upload
    group_readable  false (default); true makes the public files 0640 instead of 0644

The connection goes to an address that the outbound destination policy allows
(shared.destinations). Errors name a category (refused, timed out, host key mismatch, ...),
never what the server said, and never the key file's path.

Authentication is by that key only: no agent, no ~/.ssh keys, no passwords. Each file goes to
a hidden temporary name beside the final one, is chmod-ed to its final mode while still empty,
filled, closed, then renamed over the final name (posix-rename@openssh.com), so the host sees
the old file or the new one and a key is never readable by others. The key goes first and the
certificate last (see directory.INSTALL_ORDER). SFTP has no portable fsync, so durability of
the data across a power cut of the host is left to its file system.

`installed` is true only when a reload command ran and exited 0. A failing reload command is
retryable, with the files already delivered; its exit status and the tail of its output
(stderr and stdout together) are in the message.

Errors: a host key mismatch, a refused key and bad settings are permanent; connection errors,
timeouts and other SSH/SFTP failures are retryable, except "permission denied" on the host.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import posixpath
import stat
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import paramiko
from paramiko.pkey import UnknownKeyType

from services.distributor.targets.base import (
    Bundle,
    Delivered,
    TargetError,
    named_file,
    parse_settings,
)
from services.distributor.targets.directory import install_order, temp_name
from shared.destinations import DestinationPolicy, DestinationRefused, connection_category

DEFAULT_PORT = 22
DIRECTORY_MODE = 0o755
OUTPUT_TAIL = 300


@dataclass(frozen=True)
class SshSettings:
    host: str
    port: int
    username: str
    path: str
    host_key: Any  # paramiko.PKey
    key_file: str
    reload_command: str | None
    group_readable: bool

    @property
    def where(self) -> str:
        return f"{self.username}@{self.host}:{self.port}"

    @classmethod
    def parse(
        cls, settings: Mapping[str, Any], environ: Mapping[str, str], host_names: Iterable[str]
    ) -> SshSettings:
        """Validate the stored settings; every problem here is permanent."""
        config = parse_settings("ssh", settings)
        host = config["host"].strip("[]").lower()
        if host not in {n.lower() for n in host_names}:
            raise TargetError(
                "the ssh target must connect to one of the host's own names or addresses",
                retryable=False,
            )
        return cls(
            host=host,
            port=config["port"],
            username=config["username"],
            path=config["path"],
            host_key=parse_host_key(config["host_key"]),
            key_file=named_file(environ, config["key_file_env"], "key_file_env"),
            reload_command=config.get("reload_command"),
            group_readable=config["group_readable"],
        )


def parse_host_key(line: str) -> Any:
    """An OpenSSH public key line ("<type> <base64> [comment]") as a paramiko key."""
    parts = line.split()
    if len(parts) < 2:
        raise TargetError(
            'host_key must be an OpenSSH public key line: "ssh-ed25519 AAAA..."', retryable=False
        )
    try:
        return paramiko.PKey.from_type_string(parts[0], base64.b64decode(parts[1], validate=True))
    except (binascii.Error, ValueError, TypeError, paramiko.SSHException, UnknownKeyType) as exc:
        raise TargetError(
            f"host_key is not a valid {parts[0]!r} public key", retryable=False
        ) from exc


def load_client_key(path: str) -> Any:
    """The private key; errors never name the path (it is the deployment's, not the user's)."""
    try:
        return paramiko.PKey.from_path(path)
    except paramiko.PasswordRequiredException as exc:
        raise TargetError(
            "the SSH key file is encrypted: certfleet needs an unencrypted key file "
            "that only the distributor can read",
            retryable=False,
        ) from exc
    except (OSError, paramiko.SSHException, UnknownKeyType, ValueError, TypeError) as exc:
        raise TargetError(
            "the SSH key file holds no private key that can be used", retryable=False
        ) from exc


def _known_hosts_name(host: str, port: int) -> str:
    """The name paramiko looks the host key up by (as in known_hosts)."""
    return host if port == DEFAULT_PORT else f"[{host}]:{port}"


class SshTarget:
    method = "ssh"

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        policy: DestinationPolicy | None = None,
        timeout: float = 15.0,
        command_timeout: float = 120.0,
    ) -> None:
        """`environ` holds the distributor's CERTFLEET_SECRET_* variables, where key_file_env
        is looked up; `policy` says which addresses may be reached; `timeout` bounds
        connecting and each SSH/SFTP exchange, `command_timeout` the reload."""
        self._environ: Mapping[str, str] = environ if environ is not None else {}
        self._policy = policy or DestinationPolicy()
        self.timeout = timeout
        self.command_timeout = command_timeout

    def deliver(self, bundle: Bundle, settings: Mapping[str, Any]) -> Delivered:
        config = SshSettings.parse(settings, self._environ, bundle.host_names)
        client_key = load_client_key(config.key_file)
        files = install_order(bundle.files(config.group_readable))
        client = self._connect(config, client_key)
        try:
            self._upload(client, config, files)
            uploaded = f"uploaded {len(files)} files to {config.where}{config.path}"
            if config.reload_command is None:
                return Delivered(installed=False, detail=uploaded)
            self._reload(client, config, config.reload_command)
            return Delivered(installed=True, detail=f"{uploaded}; the reload command succeeded")
        finally:
            client.close()

    def _connect(self, config: SshSettings, client_key: Any) -> Any:
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        expected = config.host_key
        client.get_host_keys().add(
            _known_hosts_name(config.host, config.port), expected.get_name(), expected
        )
        try:
            sock = self._policy.connect(config.host, config.port, self.timeout)
        except DestinationRefused as exc:
            client.close()
            raise TargetError(
                f"cannot reach {config.where} over SSH: {exc.category}",
                retryable=exc.category not in ("not allowed",),
            ) from exc
        try:
            client.connect(
                config.host,
                sock=sock,
                port=config.port,
                username=config.username,
                pkey=client_key,
                allow_agent=False,
                look_for_keys=False,
                timeout=self.timeout,
                banner_timeout=self.timeout,
                auth_timeout=self.timeout,
                channel_timeout=self.timeout,
            )
        except (OSError, EOFError, paramiko.SSHException) as exc:
            client.close()
            sock.close()
            raise _connect_error(config, exc) from exc
        except BaseException:
            client.close()
            sock.close()
            raise
        return client

    def _upload(
        self, client: Any, config: SshSettings, files: list[tuple[str, tuple[bytes, int]]]
    ) -> None:
        try:
            sftp = client.open_sftp()
            try:
                sftp.get_channel().settimeout(self.timeout)
                _makedirs(sftp, config.path, config.where)
                for name, (content, mode) in files:
                    _put_atomic(sftp, config.path, name, content, mode)
            finally:
                sftp.close()
        except OSError as exc:
            permanent = exc.errno in (errno.EACCES, errno.EPERM)
            what = "permission denied" if permanent else connection_category(exc)
            raise TargetError(
                f"SFTP upload to {config.where}{config.path} failed: {what}",
                retryable=not permanent,
            ) from exc
        except (paramiko.SSHException, EOFError) as exc:
            raise TargetError(
                f"SFTP upload to {config.where}{config.path} failed: connection closed",
                retryable=True,
            ) from exc

    def _reload(self, client: Any, config: SshSettings, command: str) -> None:
        try:
            channel = client.get_transport().open_session(timeout=self.timeout)
            try:
                channel.set_combine_stderr(True)
                channel.exec_command(command)
                channel.shutdown_write()
                output = _read_until_eof(channel, time.monotonic() + self.command_timeout)
                status = channel.recv_exit_status()
            finally:
                channel.close()
        except TimeoutError as exc:
            raise TargetError(
                f"the files are delivered to {config.where} but not installed: the reload "
                f"command did not finish within {self.command_timeout:g}s",
                retryable=True,
            ) from exc
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise TargetError(
                f"the files are delivered to {config.where} but not installed: the reload "
                f"command could not run ({connection_category(exc)})",
                retryable=True,
            ) from exc
        if status != 0:
            tail = output.decode(errors="replace").strip()[-OUTPUT_TAIL:]
            raise TargetError(
                f"the files are delivered to {config.where} but not installed: the reload "
                f"command exited with status {status}" + (f": {tail}" if tail else ""),
                retryable=True,
            )


def _connect_error(config: SshSettings, exc: Exception) -> TargetError:
    """A category only: nothing the server sent (banner, key, message) is repeated."""
    if isinstance(exc, paramiko.BadHostKeyException) or (
        isinstance(exc, paramiko.SSHException) and "known_hosts" in str(exc)
    ):
        # RejectPolicy: a server that offers no key of the expected type ends here too.
        return TargetError(
            f"host key mismatch at {config.host}:{config.port}: the server does not present "
            "the host_key of the inventory",
            retryable=False,
        )
    if isinstance(exc, paramiko.AuthenticationException):
        return TargetError(f"{config.where} refused the configured SSH key", retryable=False)
    return TargetError(
        f"cannot reach {config.where} over SSH: {connection_category(exc)}", retryable=True
    )


def _makedirs(sftp: Any, path: str, where: str) -> None:
    try:
        attributes = sftp.stat(path)
    except FileNotFoundError:
        parent = posixpath.dirname(path.rstrip("/"))
        if parent and parent != path:
            _makedirs(sftp, parent, where)
        try:
            sftp.mkdir(path, DIRECTORY_MODE)
        except OSError:
            if not stat.S_ISDIR(sftp.stat(path).st_mode or 0):  # made meanwhile by another
                raise
        return
    if not stat.S_ISDIR(attributes.st_mode or 0):
        raise TargetError(f"{path} on {where} is not a directory", retryable=False)


def _put_atomic(sftp: Any, directory: str, name: str, content: bytes, mode: int) -> None:
    """Upload beside the final name with the final mode set before any byte, then rename."""
    final = posixpath.join(directory, name)
    tmp = posixpath.join(directory, temp_name(name))
    try:
        with sftp.open(tmp, "wbx") as remote:
            remote.chmod(mode)
            remote.set_pipelined(True)
            remote.write(content)
        sftp.posix_rename(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError, paramiko.SSHException):
            sftp.remove(tmp)
        raise


def _read_until_eof(channel: Any, deadline: float) -> bytes:
    """Read the command's output until it closes it, keeping only the tail."""
    tail = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        channel.settimeout(remaining)
        chunk = channel.recv(32768)
        if not chunk:
            break
        tail = (tail + chunk)[-4 * OUTPUT_TAIL :]
    if not channel.status_event.wait(max(deadline - time.monotonic(), 0.0)):
        raise TimeoutError
    return tail
