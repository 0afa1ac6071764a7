"""`certfleet` imports a command only when it runs, and its listing stays what it would be
with every command loaded."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from services.cli.lazy import LazyGroup
from services.cli.main import LAZY, cli

HEAVY = ("sqlalchemy", "alembic", "celery", "cryptography", "rich", "requests", "redis", "yaml")


def run_python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout


def test_help_imports_no_command_and_no_heavy_library() -> None:
    loaded = json.loads(
        run_python(
            "import io, json, sys, contextlib\n"
            "from services.cli.main import cli\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try: cli(['--help'])\n"
            "    except SystemExit: pass\n"
            "print(json.dumps(sorted(sys.modules)))\n"
        )
    )
    ours = {m for m in loaded if m.split(".")[0] in ("services", "shared")}
    assert ours == {"services", "services.cli", "services.cli.lazy", "services.cli.main"}
    assert [m for m in loaded if m.split(".")[0] in HEAVY] == []


def eager_copy() -> click.Group:
    """The same root with every command imported, as click would list them without laziness."""
    ctx = click.Context(cli)
    group = click.Group("certfleet", params=cli.params, help=cli.help)
    for name in cli.list_commands(ctx):
        command = LAZY[name].load()
        group.add_command(command, name)
    return group


@pytest.mark.parametrize("width", [60, 80, 200])
def test_lazy_listing_equals_the_listing_with_every_command_loaded(width: int) -> None:
    fresh = LazyGroup(name="certfleet", params=cli.params, help=cli.help, lazy=LAZY)
    lazy_help = fresh.get_help(
        click.Context(fresh, info_name="certfleet", max_content_width=width, terminal_width=width)
    )
    assert fresh.commands == {}, "the listing imported a command"
    eager = eager_copy()
    eager_help = eager.get_help(
        click.Context(eager, info_name="certfleet", max_content_width=width, terminal_width=width)
    )
    assert lazy_help == eager_help


@pytest.mark.parametrize("name", sorted(LAZY))
def test_each_kept_short_help_is_the_commands_own(name: str) -> None:
    command = LAZY[name].load()
    assert command.name == name
    stand_in = click.Command(name, help=LAZY[name].short_help)
    assert stand_in.get_short_help_str(1000) == command.get_short_help_str(1000)


def every_command(
    group: click.Group, path: tuple[str, ...] = ()
) -> list[tuple[str, click.Command]]:
    found = []
    for name in group.list_commands(click.Context(group)):
        command = group.get_command(click.Context(group), name)
        assert command is not None, (path, name)
        found.append((" ".join((*path, name)), command))
        if isinstance(command, click.Group):
            found += every_command(command, (*path, name))
    return found


def test_every_command_says_what_it_does() -> None:
    silent = [path for path, command in every_command(cli) if not command.get_short_help_str()]
    assert silent == []


def test_a_command_runs_once_loaded_and_an_unknown_one_is_refused() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["completion", "bash"])
    assert result.exit_code == 0, result.output
    assert "_CERTFLEET_COMPLETE" in result.output
    result = runner.invoke(cli, ["certz"])
    assert result.exit_code == 2
    assert "No such command 'certz'" in result.output


def test_the_module_runs_as_a_program() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "report", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "expiry" in done.stdout
