"""`certfleet campaign`: renew part of the fleet at a chosen pace, or rotate a CA, and watch
it happen. Everything goes through /api/v1/campaigns."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import click
from rich.console import RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from services.cli.client import ApiClient
from services.cli.common import client_of, console, emit, err_console, friendly_errors

CAMPAIGNS = "/api/v1/campaigns"
ITEM_STATUSES = ("pending", "queued", "issued", "delivered", "verified", "failed", "cancelled")
SHOWN_COUNTS = ("queued", "issued", "delivered", "verified", "failed")
HOSTS_SHOWN = 5
EXIT_FAILED, EXIT_TIMEOUT = 1, 2


@click.group()
def campaign() -> None:
    """Renew part of the fleet at a chosen pace, or rotate a CA."""


class Rate(click.ParamType):
    """A pace: a number of certificates per minute, or `unthrottled` (None)."""

    name = "N|unthrottled"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value is None or str(value).lower() == "unthrottled":
            return None
        try:
            rate = int(value)
        except ValueError:
            self.fail(f"{value!r} is neither a number nor 'unthrottled'", param, ctx)
        if not 1 <= rate <= 10000:
            self.fail(f"{rate} is not between 1 and 10000", param, ctx)
        return rate


PACING = (
    click.option(
        "--rate",
        type=Rate(),
        default="60",
        show_default=True,
        help="certificates started per minute (1-10000), or 'unthrottled'",
    ),
    click.option(
        "--per-site",
        type=click.IntRange(1, 1000),
        default=2,
        show_default=True,
        help="certificates in flight per site",
    ),
    click.option("--dry-run", is_flag=True, help="show what would change; store nothing"),
    click.option("--watch", is_flag=True, help="then follow it with a progress bar"),
)


def pacing(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options every campaign is started with."""
    for option in reversed(PACING):
        command = option(command)
    return command


@campaign.command("create")
@click.argument("name")
@click.option("--site", "sites", multiple=True, help="site name (repeatable)")
@click.option("--authority", help="only certificates signed by this authority")
@click.option("--host", "hosts", multiple=True, help="host name (repeatable)")
@click.option("--expiring-within", type=click.IntRange(0, 100000), help="days")
@click.option("--all", "everything", is_flag=True, help="the whole fleet")
@click.option("--ignore-windows", is_flag=True, help="do not wait for maintenance windows")
@click.option("--max-failures", type=click.IntRange(1, 100000), default=10, show_default=True)
@pacing
@click.pass_context
@friendly_errors
def campaign_create(
    ctx: click.Context,
    name: str,
    sites: tuple[str, ...],
    authority: str | None,
    hosts: tuple[str, ...],
    expiring_within: int | None,
    everything: bool,
    ignore_windows: bool,
    max_failures: int,
    rate: int,
    per_site: int,
    dry_run: bool,
    watch: bool,
) -> None:
    """Renew the certificates a selector matches (all given filters must match)."""
    selector: dict[str, Any] = {
        "sites": list(sites),
        "authority": authority,
        "hosts": list(hosts),
        "expiring_within_days": expiring_within,
        "all": everything,
    }
    body = {
        "name": name,
        "kind": "renew",
        "selector": {k: v for k, v in selector.items() if v not in (None, [], False)},
        "rate_per_minute": rate,
        "per_site_concurrency": per_site,
        "respect_windows": not ignore_windows,
        "max_failures": max_failures,
    }
    start(ctx, body, dry_run=dry_run, watch=watch)


@campaign.command("rotate-ca")
@click.argument("authority")
@click.option("--site", "sites", multiple=True, help="only these sites (repeatable)")
@click.option("--new-name", help="the new authority's name (default: old name and date)")
@click.option(
    "--ack-share",
    type=click.FloatRange(0, 1),
    default=1.0,
    show_default=True,
    help="share of clients that must hold the new trust bundle before leaves are re-issued",
)
@pacing
@click.pass_context
@friendly_errors
def campaign_rotate_ca(
    ctx: click.Context,
    authority: str,
    sites: tuple[str, ...],
    new_name: str | None,
    ack_share: float,
    rate: int,
    per_site: int,
    dry_run: bool,
    watch: bool,
) -> None:
    """Replace AUTHORITY: a new CA, trusted everywhere first, then every leaf re-issued."""
    body = {
        "name": f"rotate {authority}",
        "kind": "rotate_authority",
        "selector": {"authority": authority, **({"sites": list(sites)} if sites else {})},
        "ack_share": ack_share,
        "new_authority": {"name": new_name} if new_name else {},
        "rate_per_minute": rate,
        "per_site_concurrency": per_site,
    }
    start(ctx, body, dry_run=dry_run, watch=watch)


def start(ctx: click.Context, body: dict[str, Any], *, dry_run: bool, watch: bool) -> None:
    client = client_of(ctx)
    if dry_run:
        show_plan(ctx, client.post_json(CAMPAIGNS, {**body, "dry_run": True}))
        return
    created = client.post_json(CAMPAIGNS, body)
    if ctx.obj["output"] == "json" and not watch:
        click.echo(json.dumps(created, indent=2))
        return
    click.echo(
        f"campaign {created['id']} ({created['name']!r}) started: "
        f"{created['counts']['total']} certificate(s)"
        + (f", phase {created['phase']}" if created["phase"] else "")
    )
    if watch:
        sys.exit(follow(client, created["id"], timeout=None, interval=2.0))


def show_plan(ctx: click.Context, plan: dict[str, Any]) -> None:
    if ctx.obj["output"] == "json":
        click.echo(json.dumps(plan, indent=2))
        return
    if plan["kind"] == "rotate_authority":
        click.echo(
            f"rotate {plan['authority']!r} -> {plan['new_authority']!r}: trust bundle to "
            f"{plan['clients']} client(s), re-issue after {plan['ack_share']:.0%} hold it; "
            + ("the old CA is retired" if plan["retires_old_authority"] else "the old CA stays")
        )
    rows = [
        {
            "site": site["site"],
            "certificates": site["certificates"],
            "hosts": first_hosts(site),
        }
        for site in plan["sites"]
    ]
    emit(ctx, rows, ("site", "certificates", "hosts"), "would renew")
    click.echo(f"{plan['total']} certificate(s) in all; dry run: nothing was stored")


def first_hosts(site: dict[str, Any]) -> str:
    names = [h["host"] for h in site["hosts"][:HOSTS_SHOWN]]
    more = site["certificates"] - len(names)
    return ", ".join(names) + (f" (+{more} more)" if more > 0 else "")


@campaign.command("list")
@click.option(
    "--status", type=click.Choice(["running", "paused", "cancelled", "completed", "failed"])
)
@click.pass_context
@friendly_errors
def campaign_list(ctx: click.Context, status: str | None) -> None:
    """Campaigns, newest first."""
    rows = client_of(ctx).get_json(CAMPAIGNS, status=status)
    for row in rows:
        row["progress"] = f"{row['counts']['finished']}/{row['counts']['total']}"
        row["failed"] = row["counts"]["failed"]
        row["created"] = row["created_at"][:16].replace("T", " ")
    columns = ("id", "name", "kind", "status", "phase", "progress", "failed", "created")
    emit(ctx, rows, columns, "campaigns")


@campaign.command("show")
@click.argument("campaign_id", type=int)
@click.pass_context
@friendly_errors
def campaign_show(ctx: click.Context, campaign_id: int) -> None:
    """One campaign: where it stands, its counts, and why it waits."""
    row = client_of(ctx).get_json(f"{CAMPAIGNS}/{campaign_id}")
    if ctx.obj["output"] == "json":
        click.echo(json.dumps(row, indent=2))
        return
    windows = "within" if row["respect_windows"] else "ignoring"
    rate = f"{row['rate_per_minute']}/min" if row["rate_per_minute"] else "unthrottled"
    pace = f"{rate}, {row['per_site_concurrency']} per site, {windows}"
    table = Table(title=f"campaign {row['id']}", show_header=False)
    for label, value in (
        ("name", row["name"]),
        ("kind", row["kind"]),
        ("status", row["status"]),
        ("phase", row["phase"] or ""),
        ("reason", row["reason"] or ""),
        ("selector", json.dumps(row["selector"])),
        ("pace", pace + " maintenance windows"),
        ("counts", counts_line(row["counts"], everything=True)),
        ("created", f"{row['created_at']} by {row['created_by']}"),
        ("finished", row["finished_at"] or ""),
    ):
        table.add_row(label, str(value))
    console.print(table)


def counts_line(counts: dict[str, int], *, everything: bool = False) -> str:
    shown = tally(counts, ITEM_STATUSES if everything else SHOWN_COUNTS)
    return f"{counts['finished']}/{counts['total']} finished: {shown}"


def tally(counts: dict[str, int], names: tuple[str, ...]) -> str:
    return ", ".join(f"{name} {counts.get(name, 0)}" for name in names)


@campaign.command("items")
@click.argument("campaign_id", type=int)
@click.option("--status", type=click.Choice([*ITEM_STATUSES, "skipped"]))
@click.pass_context
@friendly_errors
def campaign_items(ctx: click.Context, campaign_id: int, status: str | None) -> None:
    """The certificates of a campaign and what became of each."""
    rows = list(client_of(ctx).paged(f"{CAMPAIGNS}/{campaign_id}/items", status=status, limit=1000))
    for row in rows:
        row["finished"] = (row["finished_at"] or "")[:19].replace("T", " ")
        row["error"] = (row["error"] or "")[:80]
    columns = ("id", "host", "certificate_id", "status", "new_certificate_id", "finished", "error")
    emit(ctx, rows, columns, f"campaign {campaign_id}")


def steering(action: str, help_text: str) -> Callable[..., Any]:
    @click.argument("campaign_id", type=int)
    @click.pass_context
    @friendly_errors
    def command(ctx: click.Context, campaign_id: int, **body: Any) -> None:
        row = client_of(ctx).post_json(f"{CAMPAIGNS}/{campaign_id}/{action}", body)
        if ctx.obj["output"] == "json":
            click.echo(json.dumps(row, indent=2))
            return
        click.echo(f"campaign {row['id']}: {row['status']}")
        if row["reason"]:
            click.echo(row["reason"])

    command.__doc__ = help_text
    return command


campaign.command("pause")(steering("pause", "Start nothing more; what is in flight finishes."))
campaign.command("cancel")(
    steering("cancel", "Cancel what has not started; what is in flight finishes.")
)
campaign.command("resume")(
    click.option("--retry-failed", is_flag=True, help="start the failed certificates again")(
        steering("resume", "Carry on where the campaign stopped.")
    )
)


@campaign.command("watch")
@click.argument("campaign_id", type=int)
@click.option("--timeout", type=click.FloatRange(min=0), help="seconds; default: until done")
@click.option("--interval", type=click.FloatRange(min=0.1), default=2.0, show_default=True)
@click.pass_context
@friendly_errors
def campaign_watch(
    ctx: click.Context, campaign_id: int, timeout: float | None, interval: float
) -> None:
    """Follow a campaign until it finishes: exit 0 if nothing failed, 1 if something did,
    2 if --timeout passed first."""
    sys.exit(follow(client_of(ctx), campaign_id, timeout=timeout, interval=interval))


def follow(client: ApiClient, campaign_id: int, *, timeout: float | None, interval: float) -> int:
    """Poll the campaign with a progress bar (finished of total items) and a line with its
    phase and counts; print the reason whenever it changes (paused, or a rotation waiting
    for its clients)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    columns = (
        TextColumn(f"campaign {campaign_id}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    reason = None
    with CampaignProgress(*columns, console=err_console, transient=False) as progress:
        task = progress.add_task("campaign", total=None, line="")
        while True:
            row = client.get_json(f"{CAMPAIGNS}/{campaign_id}")
            counts = row["counts"]
            progress.update(
                task,
                total=counts["total"] or None,  # a rotation has no items before it re-issues
                completed=counts["finished"],
                line=f"{row['phase'] or row['status']}: {tally(counts, SHOWN_COUNTS)}",
            )
            if row["reason"] and row["reason"] != reason:
                progress.console.print(f"{row['status']}: {row['reason']}", highlight=False)
            reason = row["reason"]
            if row["finished_at"] is not None:
                break
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            time.sleep(interval if left is None else min(interval, left))
    if row["finished_at"] is None:
        err_console.print(
            f"[yellow]campaign {campaign_id} has not finished after {timeout:g}s[/yellow] "
            f"({row['status']}, {counts_line(counts)}); it carries on without this command",
            highlight=False,
        )
        return EXIT_TIMEOUT
    click.echo(f"campaign {campaign_id} {row['status']}: {counts_line(counts, everything=True)}")
    if counts["failed"] or row["status"] == "failed":
        click.echo(f"see: certfleet campaign items {campaign_id} --status failed", err=True)
        return EXIT_FAILED
    return 0


class CampaignProgress(Progress):
    """The bar, and under it a line of its own with the phase and the counts, so that a
    narrow terminal cuts neither."""

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        for task in self.tasks:
            yield Text(task.fields.get("line", ""), overflow="fold")
