"""`certfleet init` makes the two secrets once and keeps them in var/secrets.env (0600) when
the environment does not give them; `stack run` and `doctor` read the file; a variable that is
set always wins, and with both set no file is written."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from services.cli import local_secrets
from services.cli.main import cli


def init(tmp_path: Path, **extra: str) -> tuple[int, str]:
    env = {
        "CERTFLEET_VAR_DIR": str(tmp_path / "var"),
        "CERTFLEET_DATABASE_URL": f"sqlite:///{tmp_path / 'var' / 'certfleet.db'}",
        "CERTFLEET_CA_KEY_PASSPHRASE": "",
        "CERTFLEET_DATA_KEY": "",
        **extra,
    }
    result = CliRunner().invoke(cli, ["init", "--key-bits", "2048"], env=env)
    return result.exit_code, result.output


def test_init_makes_the_secrets_once_and_keeps_them_private(tmp_path: Path) -> None:
    code, output = init(tmp_path)
    assert code == 0, output
    path = tmp_path / "var" / "secrets.env"
    assert f"secrets kept in {path}" in output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "var").stat().st_mode) == 0o700
    first = local_secrets.read(path)
    assert set(first) == set(local_secrets.NAMES)
    assert all(len(v) >= 32 for v in first.values())
    for value in first.values():
        assert value not in output  # never printed
    code, output = init(tmp_path)  # again: the same secrets, or the CA key would be lost
    assert code == 0 and local_secrets.read(path) == first
    merged = local_secrets.merged({"CERTFLEET_VAR_DIR": str(tmp_path / "var")})
    assert {k: merged[k] for k in local_secrets.NAMES} == first
    chosen = local_secrets.merged(
        {"CERTFLEET_VAR_DIR": str(tmp_path / "var"), "CERTFLEET_DATA_KEY": "from-the-env-1234"}
    )
    assert chosen["CERTFLEET_DATA_KEY"] == "from-the-env-1234"  # the environment wins


@pytest.mark.parametrize("given", [("CERTFLEET_CA_KEY_PASSPHRASE",), local_secrets.NAMES])
def test_what_the_environment_gives_is_not_written(tmp_path: Path, given: tuple[str, ...]) -> None:
    code, output = init(tmp_path, **{name: f"{name.lower()}-given-0123" for name in given})
    assert code == 0, output
    path = tmp_path / "var" / "secrets.env"
    written = local_secrets.read(path)
    assert set(written) == set(local_secrets.NAMES) - set(given)
    assert not any("given" in v for v in written.values())
    assert (path.exists()) == bool(written)
