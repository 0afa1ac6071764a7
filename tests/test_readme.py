"""Every `certfleet` and `certfleet-agent` command line printed in the README names a real
command, and every option it shows exists on that command. (The walkthrough block is also
run as written: tests/e2e/test_stack.py.)"""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from services.agent.main import agent
from services.cli.main import cli

README = Path(__file__).parents[1] / "README.md"
PROGRAMS = {"certfleet": cli, "certfleet-agent": agent}


def command_lines() -> list[str]:
    """Lines in the README's code blocks that run one of our programs (joined across `\\`)."""
    lines: list[str] = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", README.read_text(), re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = re.sub(r"^\s*(\w+=\S+\s+)*", "", line)  # VAR=value prefixes
            line = line.split("  #", 1)[0].strip()
            if re.match(r"(certfleet|certfleet-agent) [a-z-]", line) and "──" not in line:
                lines.append(line)
    return lines


def options_of(command: click.Command) -> set[str]:
    names: set[str] = set()
    for param in command.params:
        names.update(param.opts)
        names.update(param.secondary_opts)
    return names


def resolve(group: click.Group, words: list[str]) -> tuple[click.Command, list[str]]:
    """Walk subcommand names from `group`; the command reached and the words left over."""
    command: click.Command = group
    while words and isinstance(command, click.Group):
        sub = subcommand(command, words[0])
        if sub is None:
            break
        command, words = sub, words[1:]
    return command, words


def subcommand(group: click.Group, name: str) -> click.Command | None:
    """The command `name` of `group`, imported if the group loads its commands lazily."""
    return group.get_command(click.Context(group), name)


@pytest.mark.parametrize("line", command_lines())
def test_readme_command_exists_with_its_options(line: str) -> None:
    program, rest = line.split(" ", 1)
    root = PROGRAMS[program]
    assert isinstance(root, click.Group)
    global_options = options_of(root)
    tokens = rest.split()
    while tokens and tokens[0] in global_options | {"-o", "json", "table"}:
        tokens = tokens[1:]
    alternatives = " ".join(tokens).split(" | ")
    first, _ = resolve(root, alternatives[0].split())
    assert first is not root, f"no such command: {line}"
    parent = root
    for name in alternatives[0].split():
        nxt = subcommand(parent, name) if isinstance(parent, click.Group) else None
        if nxt is not None:
            if not isinstance(nxt, click.Group):
                break
            parent = nxt
    for index, alternative in enumerate(alternatives):
        words = alternative.split()
        command, _ = resolve(root if index == 0 else parent, words)
        assert (command is not root and command is not parent) or not words, (line, alternative)
        allowed = options_of(command) | global_options
        for token in words:
            option = token.strip("[]").split("=", 1)[0]
            if option.startswith("-") and option != "-":
                assert option in allowed, f"{option} is not an option of {line!r}"


def test_the_readme_shows_every_top_level_command() -> None:
    shown = {
        word
        for line in command_lines()
        if line.startswith("certfleet ")
        for word in line.split()[1:]
        if word in cli.list_commands(click.Context(cli))
    }
    hidden = set(cli.list_commands(click.Context(cli))) - shown
    assert hidden == set(), f"commands missing from the README: {sorted(hidden)}"
