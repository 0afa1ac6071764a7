"""The SSH target against a real OpenSSH server on loopback (see conftest.sshd)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from services.distributor.targets.base import (
    CERT_FILE,
    CHAIN_FILE,
    FULLCHAIN_FILE,
    KEY_FILE,
    TRUST_FILE,
    Bundle,
    TargetError,
)
from services.distributor.targets.ssh import SshTarget
from shared.destinations import DestinationPolicy
from tests.ports import free_port
from tests.services.distributor.conftest import BundleFactory
from tests.sshd import SshServer, ssh_keygen

KEY_VARIABLE = "CERTFLEET_SECRET_TEST_SSH_KEY"
LOOPBACK = DestinationPolicy.build(["127.0.0.0/8"])


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def target_for(sshd: SshServer, key: Path | None = None) -> SshTarget:
    return SshTarget(
        environ={KEY_VARIABLE: str(key or sshd.client_key)}, policy=LOOPBACK, timeout=5
    )


def settings_for(sshd: SshServer, path: Path, **overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": sshd.port,
        "username": sshd.username,
        "path": str(path),
        "host_key": sshd.host_key,
        "key_file_env": KEY_VARIABLE,
    }
    settings.update(overrides)
    return {k: v for k, v in settings.items() if v is not None}


def deliver_error(target: SshTarget, bundle: Bundle, settings: dict[str, Any]) -> TargetError:
    with pytest.raises(TargetError) as caught:
        target.deliver(bundle, settings)
    return caught.value


def test_uploads_every_file_with_its_mode(tmp_path: Path, sshd: SshServer, bundle: Bundle) -> None:
    remote = tmp_path / "etc" / "certfleet"  # created, parents too

    result = target_for(sshd).deliver(bundle, settings_for(sshd, remote))

    assert not result.installed
    assert f"{sshd.port}{remote}" in result.detail
    assert set(os.listdir(remote)) == {CERT_FILE, CHAIN_FILE, FULLCHAIN_FILE, KEY_FILE, TRUST_FILE}
    for name, (content, mode) in bundle.files().items():
        assert (remote / name).read_bytes() == content
        assert mode_of(remote / name) == mode
    assert mode_of(remote / KEY_FILE) == 0o600


def test_group_readable_public_files(tmp_path: Path, sshd: SshServer, bundle: Bundle) -> None:
    target_for(sshd).deliver(bundle, settings_for(sshd, tmp_path, group_readable=True))

    assert mode_of(tmp_path / CERT_FILE) == 0o640
    assert mode_of(tmp_path / TRUST_FILE) == 0o640
    assert mode_of(tmp_path / KEY_FILE) == 0o600


def test_replaces_files_through_a_temporary_name_and_a_rename(
    tmp_path: Path, sshd: SshServer, make_bundle: BundleFactory
) -> None:
    target = target_for(sshd)
    old, new = make_bundle(), make_bundle()
    target.deliver(old, settings_for(sshd, tmp_path))
    os.link(tmp_path / KEY_FILE, tmp_path / "old-key.link")

    target.deliver(new, settings_for(sshd, tmp_path))

    # The old inode kept the old key: the new file was renamed over the name, not rewritten.
    assert (tmp_path / "old-key.link").read_bytes() == old.key_pem
    assert (tmp_path / KEY_FILE).read_bytes() == new.key_pem
    assert [name for name in os.listdir(tmp_path) if ".tmp-" in name] == []


def test_a_reload_command_that_succeeds_means_installed(
    tmp_path: Path, sshd: SshServer, bundle: Bundle
) -> None:
    command = f"touch {tmp_path}/reloaded && test -s {tmp_path}/{CERT_FILE}"

    result = target_for(sshd).deliver(bundle, settings_for(sshd, tmp_path, reload_command=command))

    assert result.installed
    assert "reload command succeeded" in result.detail
    assert (tmp_path / "reloaded").exists()


def test_a_failing_reload_command_is_retryable_and_says_why(
    tmp_path: Path, sshd: SshServer, bundle: Bundle
) -> None:
    command = "echo 'nginx: [emerg] cannot load certificate' >&2; exit 3"

    error = deliver_error(
        target_for(sshd), bundle, settings_for(sshd, tmp_path, reload_command=command)
    )

    assert error.retryable
    assert "status 3" in error.message
    assert "cannot load certificate" in error.message
    assert "delivered" in error.message and "not installed" in error.message
    assert (tmp_path / CERT_FILE).read_bytes() == bundle.certificate_pem


def test_a_reload_command_that_hangs_times_out(
    tmp_path: Path, sshd: SshServer, bundle: Bundle
) -> None:
    target = SshTarget(
        environ={KEY_VARIABLE: str(sshd.client_key)}, policy=LOOPBACK, command_timeout=0.5
    )

    error = deliver_error(target, bundle, settings_for(sshd, tmp_path, reload_command="sleep 5"))

    assert error.retryable
    assert "did not finish" in error.message


def test_a_different_host_key_is_a_permanent_mismatch(
    tmp_path: Path, sshd: SshServer, bundle: Bundle
) -> None:
    settings = settings_for(sshd, tmp_path / "never", host_key=sshd.stranger_host_key)

    error = deliver_error(target_for(sshd), bundle, settings)

    assert not error.retryable
    assert "host key mismatch" in error.message
    assert not (tmp_path / "never").exists()


def test_a_host_key_of_another_type_is_a_mismatch(
    tmp_path: Path, sshd: SshServer, bundle: Bundle
) -> None:
    rsa_host_key = ssh_keygen(tmp_path / "rsa_host", "rsa")

    error = deliver_error(
        target_for(sshd), bundle, settings_for(sshd, tmp_path / "never", host_key=rsa_host_key)
    )

    assert not error.retryable
    assert "host key" in error.message
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("host_key", [None, "", "ssh-ed25519", "ssh-ed25519 not-base64!"])
def test_without_a_valid_host_key_it_refuses_to_connect(
    tmp_path: Path, sshd: SshServer, bundle: Bundle, host_key: str | None
) -> None:
    settings = settings_for(sshd, tmp_path / "never")
    if host_key is None:
        del settings["host_key"]
    else:
        settings["host_key"] = host_key

    error = deliver_error(target_for(sshd), bundle, settings)

    assert not error.retryable
    assert "host_key" in error.message
    assert not (tmp_path / "never").exists()


def test_a_key_the_server_does_not_accept_is_permanent(
    tmp_path: Path, sshd: SshServer, bundle: Bundle
) -> None:
    error = deliver_error(target_for(sshd, sshd.stranger_key), bundle, settings_for(sshd, tmp_path))

    assert not error.retryable
    assert "refused the configured SSH key" in error.message


def test_nothing_listening_is_retryable(tmp_path: Path, sshd: SshServer, bundle: Bundle) -> None:
    error = deliver_error(target_for(sshd), bundle, settings_for(sshd, tmp_path, port=free_port()))

    assert error.retryable
    assert "cannot reach" in error.message


def test_a_remote_path_that_is_a_file_is_permanent(
    tmp_path: Path, sshd: SshServer, bundle: Bundle
) -> None:
    (tmp_path / "file").write_text("x")

    error = deliver_error(target_for(sshd), bundle, settings_for(sshd, tmp_path / "file"))

    assert not error.retryable
    assert "not a directory" in error.message


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"key_file_env": "CERTFLEET_SECRET_TEST_UNSET"}, "CERTFLEET_SECRET_TEST_UNSET"),
        ({"key_file_env": None}, "key_file_env"),
        ({"key_file_env": "CERTFLEET_CA_KEY_PASSPHRASE"}, "CERTFLEET_SECRET_"),
        ({"key_file": "/etc/shadow"}, "key_file"),  # a path of the distributor: unknown key
        ({"path": "relative/dir"}, "absolute path"),
        ({"port": "22"}, "port"),
        ({"username": None}, "username"),
        ({"host": "10.99.0.1"}, "own names"),  # another machine than the host itself
    ],
)
def test_bad_settings_are_permanent(
    tmp_path: Path, sshd: SshServer, bundle: Bundle, overrides: dict[str, Any], words: str
) -> None:
    settings = {**settings_for(sshd, tmp_path), **overrides}
    settings = {k: v for k, v in settings.items() if v is not None}

    error = deliver_error(target_for(sshd), bundle, settings)

    assert not error.retryable
    assert words in error.message


def test_a_key_file_that_cannot_be_used_is_not_named(
    tmp_path: Path, sshd: SshServer, bundle: Bundle
) -> None:
    """The variable's value (a path on the distributor) never reaches a message."""
    secret_path = str(tmp_path / "private-keys" / "site-b-key")
    target = SshTarget(environ={KEY_VARIABLE: secret_path}, policy=LOOPBACK, timeout=5)
    error = deliver_error(target, bundle, settings_for(sshd, tmp_path))
    assert not error.retryable
    assert KEY_VARIABLE in error.message and "cannot be used" in error.message
    assert "private-keys" not in error.message and "site-b-key" not in error.message


def test_loopback_needs_the_deployment_to_allow_it(
    tmp_path: Path, sshd: SshServer, bundle: Bundle
) -> None:
    target = SshTarget(environ={KEY_VARIABLE: str(sshd.client_key)}, timeout=5)
    error = deliver_error(target, bundle, settings_for(sshd, tmp_path / "never"))
    assert not error.retryable
    assert "not allowed" in error.message
    assert not (tmp_path / "never").exists()


def test_what_a_port_answers_is_never_repeated(
    tmp_path: Path, sshd: SshServer, bundle: Bundle
) -> None:
    """A service that is not SSH answers with its banner; the error names a category."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]

    def answer() -> None:
        for _ in range(2):
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"220 mail.internal.example ESMTP SECRET-BANNER-7f3a\r\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        error = deliver_error(target_for(sshd), bundle, settings_for(sshd, tmp_path, port=port))
    finally:
        listener.close()
        thread.join(timeout=5)
    assert "SECRET-BANNER" not in error.message and "mail.internal" not in error.message
    assert error.message.startswith("cannot reach")
