"""What every `certfleet` command shares: the API client from the global options, output as
a table or JSON, and errors as one line instead of a traceback."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from services.cli.client import ApiClient, CliError
from shared.errors import CertfleetError

F = TypeVar("F", bound=Callable[..., Any])
# Tables stay readable when piped or logged (no terminal width to detect).
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)


def friendly_errors(command: F) -> F:
    """Operator-facing errors are one line on stderr and exit code 1, never a traceback."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (CliError, CertfleetError) as exc:
            err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def writable(out: Path) -> Path:
    """Check that `out` can be written before anything is asked of the API: an export that
    cannot be saved must not be fetched (and recorded in the audit trail as made)."""
    parent = out.parent if str(out.parent) else Path(".")
    if out.is_dir():
        raise CliError(f"{out} is a directory; name a file")
    if not parent.is_dir():
        raise CliError(f"cannot write {out}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise CliError(f"cannot write {out}: permission denied")
    return out


def write_file(out: Path, content: bytes, mode: int | None = None) -> None:
    """Write what was fetched; an OS error is one line, not a traceback."""
    try:
        out.write_bytes(content)
        if mode is not None:
            out.chmod(mode)
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc.strerror or exc}") from exc


def load_token(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    path = Path(os.environ.get("CERTFLEET_VAR_DIR") or "var") / "admin.token"
    return path.read_text().strip() if path.exists() else None


def client_of(ctx: click.Context) -> ApiClient:
    return ApiClient(ctx.obj["api_url"], load_token(ctx.obj["token"]))


def emit(
    ctx: click.Context, rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str
) -> None:
    if ctx.obj["output"] == "json":
        click.echo(json.dumps(list(rows), indent=2, default=str))
        return
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(format_cell(row.get(c)) for c in columns))
    console.print(table)


def emit_one(ctx: click.Context, row: dict[str, Any], title: str) -> None:
    """One object: JSON as the API gave it, or a table of its fields."""
    if ctx.obj["output"] == "json":
        click.echo(json.dumps(row, indent=2, default=str))
        return
    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in row.items():
        shown = json.dumps(value) if isinstance(value, dict) else format_cell(value)
        table.add_row(key, shown)
    console.print(table)


def format_cell(value: Any) -> str:
    if isinstance(value, list):
        return "\n".join(str(v) for v in value)
    return "" if value is None else str(value)
