"""The directory target on the real file system."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
from services.distributor.targets.directory import DirectoryTarget
from tests.services.distributor.conftest import BundleFactory

ALL_FILES = {CERT_FILE, CHAIN_FILE, FULLCHAIN_FILE, KEY_FILE, TRUST_FILE}


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def leftovers(directory: Path) -> list[str]:
    return [name for name in os.listdir(directory) if ".tmp-" in name]


@contextmanager
def umask(value: int) -> Iterator[None]:
    previous = os.umask(value)
    try:
        yield
    finally:
        os.umask(previous)


def test_writes_every_file_with_its_mode_under_the_host_directory(
    tmp_path: Path, bundle: Bundle
) -> None:
    result = DirectoryTarget([tmp_path]).deliver(bundle, {"path": str(tmp_path / "share")})

    directory = tmp_path / "share" / bundle.host_name
    assert not result.installed
    assert str(directory) in result.detail
    assert set(os.listdir(directory)) == ALL_FILES
    for name, (content, mode) in bundle.files().items():
        assert (directory / name).read_bytes() == content
        assert mode_of(directory / name) == mode
    assert mode_of(directory / KEY_FILE) == 0o600
    assert mode_of(directory / CERT_FILE) == 0o644
    assert bundle.certificate_pem is not None and bundle.chain_pem is not None
    assert (directory / FULLCHAIN_FILE).read_bytes() == bundle.certificate_pem + bundle.chain_pem


def test_flat_layout_and_group_readable(tmp_path: Path, bundle: Bundle) -> None:
    DirectoryTarget([tmp_path]).deliver(
        bundle, {"path": str(tmp_path), "layout": "flat", "group_readable": True}
    )

    assert set(os.listdir(tmp_path)) == ALL_FILES
    assert mode_of(tmp_path / CERT_FILE) == 0o640
    assert mode_of(tmp_path / TRUST_FILE) == 0o640
    assert mode_of(tmp_path / KEY_FILE) == 0o600


def test_modes_do_not_depend_on_the_umask(tmp_path: Path, bundle: Bundle) -> None:
    target = DirectoryTarget([tmp_path])
    with umask(0):
        target.deliver(bundle, {"path": str(tmp_path / "open"), "layout": "flat"})
    with umask(0o077):
        target.deliver(bundle, {"path": str(tmp_path / "closed"), "layout": "flat"})

    for directory in (tmp_path / "open", tmp_path / "closed"):
        assert mode_of(directory / KEY_FILE) == 0o600
        assert mode_of(directory / CERT_FILE) == 0o644


def test_a_trust_bundle_writes_only_the_trust_file(
    tmp_path: Path, make_bundle: BundleFactory
) -> None:
    trust = make_bundle(kind="trust")
    DirectoryTarget([tmp_path]).deliver(trust, {"path": str(tmp_path), "layout": "flat"})

    assert os.listdir(tmp_path) == [TRUST_FILE]
    assert (tmp_path / TRUST_FILE).read_bytes() == trust.trust_pem


def test_replaces_files_by_rename_not_in_place(tmp_path: Path, make_bundle: BundleFactory) -> None:
    target = DirectoryTarget([tmp_path])
    settings = {"path": str(tmp_path), "layout": "flat"}
    old, new = make_bundle(), make_bundle()
    target.deliver(old, settings)
    os.link(tmp_path / CERT_FILE, tmp_path / "old-cert.link")

    target.deliver(new, settings)

    # The old inode still holds the old certificate: the new one was renamed over the name.
    assert (tmp_path / "old-cert.link").read_bytes() == old.certificate_pem
    assert (tmp_path / CERT_FILE).read_bytes() == new.certificate_pem
    assert leftovers(tmp_path) == []


def test_a_reader_sees_only_whole_old_or_new_files(
    tmp_path: Path, make_bundle: BundleFactory
) -> None:
    target = DirectoryTarget([tmp_path])
    settings = {"path": str(tmp_path), "layout": "flat"}
    versions = [make_bundle(), make_bundle()]
    contents = {b.key_pem for b in versions}
    target.deliver(versions[0], settings)
    seen: list[bytes | None] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.append((tmp_path / KEY_FILE).read_bytes())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for round_ in range(50):
            target.deliver(versions[round_ % 2], settings)
    finally:
        stop.set()
        reader.join(timeout=10)

    assert len(seen) > 50
    assert set(seen) <= contents
    assert set(seen) == contents  # the reader did see both versions
    assert leftovers(tmp_path) == []


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path, bundle: Bundle) -> None:
    (tmp_path / CERT_FILE).mkdir()  # rename over a directory fails

    with pytest.raises(TargetError) as caught:
        DirectoryTarget([tmp_path]).deliver(bundle, {"path": str(tmp_path), "layout": "flat"})

    assert not caught.value.retryable
    assert "EISDIR" in caught.value.message
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"path": "relative/dir"}, "absolute path"),
        ({}, "'path'"),
        ({"path": "/tmp/x", "layout": "nested"}, "layout"),
        ({"path": "/tmp/x", "group_readable": "maybe"}, "group_readable"),
        ({"path": "/tmp/x/../../etc"}, "'..'"),
        ({"path": "/tmp/x", "pahth": "/tmp/y"}, "pahth"),  # unknown keys are refused
        (
            {"path": "/tmp/x", "pfx_password_env": "CERTFLEET_CA_KEY_PASSPHRASE"},
            "CERTFLEET_SECRET_",
        ),
        ({"path": "/tmp/x", "reload_command": "systemctl reload nginx"}, "reload_command"),
    ],
)
def test_bad_settings_are_permanent(
    tmp_path: Path, bundle: Bundle, settings: dict[str, object], words: str
) -> None:
    with pytest.raises(TargetError) as caught:
        DirectoryTarget([tmp_path]).deliver(bundle, settings)

    assert not caught.value.retryable
    assert words in caught.value.message


def test_a_file_where_the_directory_should_be_is_permanent(tmp_path: Path, bundle: Bundle) -> None:
    (tmp_path / "share").write_text("not a directory")

    with pytest.raises(TargetError) as caught:
        DirectoryTarget([tmp_path]).deliver(bundle, {"path": str(tmp_path / "share")})

    assert not caught.value.retryable
    assert "ENOTDIR" in caught.value.message


def test_a_host_name_that_is_no_directory_name_is_refused(
    tmp_path: Path, make_bundle: BundleFactory
) -> None:
    with pytest.raises(TargetError) as caught:
        DirectoryTarget([tmp_path]).deliver(make_bundle(host=".."), {"path": str(tmp_path)})

    assert not caught.value.retryable
    assert os.listdir(tmp_path) == []


def test_nothing_is_written_outside_the_delivery_roots(tmp_path: Path, bundle: Bundle) -> None:
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    target = DirectoryTarget([root])
    with pytest.raises(TargetError) as caught:
        target.deliver(bundle, {"path": str(elsewhere), "layout": "flat"})
    assert not caught.value.retryable
    assert "outside the distributor's delivery roots" in caught.value.message
    # A link inside the root that leads out of it is followed to where it leads: refused too.
    (root / "escape").symlink_to(elsewhere)
    with pytest.raises(TargetError):
        target.deliver(bundle, {"path": str(root / "escape"), "layout": "flat"})
    with pytest.raises(TargetError):
        target.deliver(bundle, {"path": str(root / "escape" / "deeper")})
    assert os.listdir(elsewhere) == []
    target.deliver(bundle, {"path": str(root / "inside"), "layout": "flat"})
    assert set(os.listdir(root / "inside")) == ALL_FILES
