"""The `certfleet` commands themselves: each is imported when it runs (services.cli.main
lists them), so what one imports costs nothing to the others or to `certfleet --help`."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import click
from click.shell_completion import get_completion_class
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from services.cli import local_secrets, resources
from services.cli.client import ApiClient, CliError
from services.cli.common import (
    client_of,
    emit,
    err_console,
    friendly_errors,
    writable,
    write_file,
)
from shared.clock import SystemClock
from shared.pki.profiles import ALLOWED_RSA_BITS, DEFAULT_CA
from shared.settings import Settings

POLL_CHUNK = 500
LONG_POLL_S = 20.0  # below the client's HTTP timeout and the API's cap


@click.command()
@click.option("--ca-name", default="certfleet root CA", show_default=True)
@click.option(
    "--key-bits",
    type=click.Choice([str(b) for b in ALLOWED_RSA_BITS]),
    default=str(DEFAULT_CA.key_bits),
    show_default=True,
)
@click.option(
    "--validity-days",
    type=click.IntRange(365, 36500),
    default=DEFAULT_CA.root_validity_days,
    show_default=True,
)
@click.option("--new-token", is_flag=True, help="make another admin token even if one exists")
@friendly_errors
def init(ca_name: str, key_bits: str, validity_days: int, new_token: bool) -> None:
    """Create the schema, the first root CA and an admin token (local; needs the database).
    The CA passphrase and the data key come from the environment, or are made once and kept
    in var/secrets.env (0600), which `certfleet stack run` reads."""
    from services.cli import admin  # the database and migrations: this command only

    kept = local_secrets.ensure(os.environ)
    settings = Settings.from_env(local_secrets.merged(os.environ))
    result = admin.init(
        settings,
        SystemClock(),
        ca_name=ca_name,
        key_bits=int(key_bits),
        validity_days=validity_days,
        new_token=new_token,
    )
    if kept is not None:
        click.echo(f"secrets kept in {kept} (mode 0600); `certfleet stack run` reads them")
    verb = "created" if result.authority_created else "kept existing"
    authority = result.authority
    click.echo(f"{verb} authority {authority.name!r} (expires {authority.not_after:%Y-%m-%d})")
    if result.admin_token:
        click.echo(f"admin token (shown once, saved to {result.token_path} mode 0600):")
        click.echo(result.admin_token)
    else:
        click.echo("an admin token already exists; use --new-token for another")


@click.command()
@click.option(
    "-f",
    "--file",
    "path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
)
@click.pass_context
@friendly_errors
def apply(ctx: click.Context, path: Path) -> None:
    """Apply an inventory file (YAML or JSON) of sites and hosts."""
    content_type = "application/json" if path.suffix == ".json" else "application/yaml"
    result = (
        client_of(ctx)
        .request(
            "PUT",
            "/api/v1/inventory",
            data=path.read_bytes(),
            headers={"Content-Type": content_type},
        )
        .json()
    )
    if ctx.obj["output"] == "json":
        click.echo(json.dumps(result, indent=2))
        return
    for kind in ("sites", "hosts"):
        counts = ", ".join(
            f"{len(result[kind][o])} {o}" for o in ("created", "updated", "unchanged")
        )
        click.echo(f"{kind}: {counts}")


@click.command()
@click.argument("hosts", nargs=-1)
@click.option("--site", help="every host of this site")
@click.option("--all", "all_hosts", is_flag=True, help="every host")
@click.option(
    "--csr", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="PEM CSR (one host)"
)
@click.option("--validity-days", type=click.IntRange(1, 825))
@click.option("--idempotency-key", help="makes a retried command safe")
@click.option("--wait/--no-wait", default=False, help="wait for the issuer, with a progress bar")
@click.option("--timeout", type=float, default=600, show_default=True)
@click.pass_context
@friendly_errors
def issue(
    ctx: click.Context,
    hosts: tuple[str, ...],
    site: str | None,
    all_hosts: bool,
    csr: Path | None,
    validity_days: int | None,
    idempotency_key: str | None,
    wait: bool,
    timeout: float,
) -> None:
    """Request certificates for hosts (by name, --site or --all)."""
    client = client_of(ctx)
    names = list(hosts)
    if site or all_hosts:
        # Client machines only need the trust bundle, not a server certificate.
        names += [
            h["name"]
            for h in client.paged("/api/v1/hosts", site=site, limit=1000)
            if set(h["roles"]) != {"client"}
        ]
    names = list(dict.fromkeys(names))
    if not names:
        raise CliError("no hosts: name some, or use --site or --all")
    if csr and len(names) != 1:
        raise CliError("--csr goes with exactly one host")
    items = [
        {"host": n, "validity_days": validity_days, **({"csr": csr.read_text()} if csr else {})}
        for n in names
    ]
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    request_ids: list[int] = []
    for start in range(0, len(items), 1000):
        chunk_headers = {k: f"{v}:{start}" for k, v in headers.items()}
        result = client.post_json(
            "/api/v1/issuance-requests/bulk",
            {"requests": items[start : start + 1000]},
            headers=chunk_headers,
        )
        request_ids += [r["id"] for r in result["requests"]]
    click.echo(f"queued {len(request_ids)} issuance request(s)")
    if wait:
        failed = wait_for(client, request_ids, timeout)
        if failed:
            for row in failed:
                err_console.print(
                    f"[red]failed[/red] {row['host']}: {row['reason']}", highlight=False
                )
            sys.exit(1)


def wait_for(client: ApiClient, request_ids: Sequence[int], timeout: float) -> list[dict[str, Any]]:
    """Poll until every request is issued or failed; return the failed ones."""
    pending = set(request_ids)
    failed: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    columns = (
        TextColumn("issuing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[failed]} failed"),
    )
    with Progress(*columns, console=err_console, transient=False) as progress:
        task = progress.add_task("issue", total=len(request_ids), failed=0)
        while pending:
            if time.monotonic() > deadline:
                raise CliError(f"{len(pending)} request(s) still pending after {timeout:.0f}s")
            for row in poll(client, sorted(pending), deadline):
                if row["status"] in ("issued", "failed"):
                    pending.discard(row["id"])
                    if row["status"] == "failed":
                        failed.append(row)
            progress.update(task, completed=len(request_ids) - len(pending), failed=len(failed))
            if len(pending) > 1:
                time.sleep(0.25)
    return failed


def poll(client: ApiClient, ids: Sequence[int], deadline: float) -> Iterable[dict[str, Any]]:
    """The requests as they stand; one request is long-polled: the API answers when the
    issuer finishes it (or after LONG_POLL_S), so the CLI neither waits longer than the
    issuer nor asks in a loop."""
    if len(ids) == 1:
        wait = max(0.0, min(LONG_POLL_S, deadline - time.monotonic()))
        yield client.get_json(f"/api/v1/issuance-requests/{ids[0]}", wait=f"{wait:.1f}")
        return
    for start in range(0, len(ids), POLL_CHUNK):
        chunk = ids[start : start + POLL_CHUNK]
        page = client.get_json(
            "/api/v1/issuance-requests", ids=",".join(map(str, chunk)), limit=len(chunk)
        )
        yield from page["items"]


@click.group()
def certs() -> None:
    """Issued certificates."""


@certs.command("list")
@click.option("--site")
@click.option("--host")
@click.option("--status", type=click.Choice(["active", "superseded", "revoked", "expired"]))
@click.option("--expires-within", type=click.IntRange(0, 100000), help="days")
@click.pass_context
@friendly_errors
def certs_list(
    ctx: click.Context,
    site: str | None,
    host: str | None,
    status: str | None,
    expires_within: int | None,
) -> None:
    """List certificates with their names and expiry dates."""
    before = None
    if expires_within is not None:
        before = (dt.datetime.now(dt.UTC) + dt.timedelta(days=expires_within)).isoformat()
    rows = list(
        client_of(ctx).paged(
            "/api/v1/certificates",
            site=site,
            host=host,
            status=status,
            expires_before=before,
            limit=1000,
        )
    )
    for row in rows:
        row["names"] = row["dns_names"] + row["ip_addresses"]
        row["expires"] = row["not_after"][:10]
    emit(ctx, rows, ("id", "site", "host", "names", "expires", "status"), "certificates")


@certs.command("renew")
@click.argument("certificate_id", type=int)
@click.option("--wait/--no-wait", default=False, help="wait for the issuer, with a progress bar")
@click.pass_context
@friendly_errors
def certs_renew(ctx: click.Context, certificate_id: int, wait: bool) -> None:
    """Renew now, whatever the renewal point, backoff or maintenance window say."""
    client = client_of(ctx)
    request = client.post_json(f"/api/v1/certificates/{certificate_id}/renew", {})
    click.echo(f"renewal request {request['id']} for {request['host']}: {request['status']}")
    if wait:
        failed = wait_for(client, [request["id"]], 600)
        if failed:
            err_console.print(f"[red]failed[/red]: {failed[0]['reason']}", highlight=False)
            sys.exit(1)


@click.group()
def report() -> None:
    """Reports."""


@report.command("expiry")
@click.option("--within-days", type=click.IntRange(0, 3650), default=30, show_default=True)
@click.pass_context
@friendly_errors
def report_expiry(ctx: click.Context, within_days: int) -> None:
    """What expires within N days (and what has expired), by site; CAs that die first."""
    data = client_of(ctx).get_json("/api/v1/reports/expiry", within_days=within_days)
    if ctx.obj["output"] == "json":
        click.echo(json.dumps(data, indent=2))
        return
    emit(
        ctx, data["by_site"], ("site", "expiring", "expired"), f"expiring within {within_days} days"
    )
    for row in data["certificates"]:
        row["expires"] = row["not_after"][:10]
        due = row["renewal_due_at"] or ""
        row["renewal"] = "in progress" if row["renewal_in_progress"] else f"due {due[:10]}"
    columns = ("id", "site", "host", "expires", "days_left", "renewal")
    emit(ctx, data["certificates"], columns, "certificates")
    for authority in data["authorities"]:
        if authority["expires_before_its_leaves"]:
            err_console.print(f"[red]CA {authority['name']} expires before its leaves[/red]")


@click.command()
@click.argument("certificate_id", type=int)
@click.option(
    "--format", "fmt", type=click.Choice(["pem", "pfx"]), default="pem", show_default=True
)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="default: stdout (pem only)"
)
@click.option(
    "--password-env",
    default="CERTFLEET_PFX_PASSWORD",
    show_default=True,
    help="variable holding the PFX password; prompted for if unset",
)
@click.pass_context
@friendly_errors
def export(
    ctx: click.Context, certificate_id: int, fmt: str, out: Path | None, password_env: str
) -> None:
    """Export a certificate: PEM chain, or a Windows-importable PFX with its key."""
    client = client_of(ctx)
    if out is not None:
        writable(out)
    if fmt == "pem":
        data = client.request("GET", f"/api/v1/certificates/{certificate_id}/pem").content
        if out is None:
            click.echo(data.decode(), nl=False)
            return
    else:
        if out is None:
            raise CliError("--out is required for pfx")
        password = os.environ.get(password_env) or click.prompt(
            "PFX password", hide_input=True, confirmation_prompt=True
        )
        data = client.request(
            "POST", f"/api/v1/certificates/{certificate_id}/pfx", json={"password": password}
        ).content
    write_file(out, data, 0o600 if fmt == "pfx" else None)
    click.echo(f"wrote {out}")


@click.command()
@click.option("--host")
@click.option("--site")
@click.option(
    "--status", type=click.Choice(["pending", "delivered", "installed", "verified", "failed"])
)
@click.option("--certificate", type=int, help="certificate ID")
@click.pass_context
@friendly_errors
def deliveries(
    ctx: click.Context,
    host: str | None,
    site: str | None,
    status: str | None,
    certificate: int | None,
) -> None:
    """Where certificates and trust bundles are on their way to hosts."""
    rows = list(
        client_of(ctx).paged(
            "/api/v1/deliveries",
            host=host,
            site=site,
            status=status,
            certificate=certificate,
            limit=1000,
        )
    )
    for row in rows:
        row["what"] = f"cert {row['certificate_id']}" if row["kind"] == "certificate" else "trust"
        row["error"] = (row["last_error"] or "")[:80]
        row["updated"] = row["updated_at"][:19].replace("T", " ")
    columns = ("id", "host", "what", "method", "state", "attempts", "updated", "error")
    emit(ctx, rows, columns, "deliveries")


@click.group()
def agent() -> None:
    """Host agents."""


@agent.command("enroll-token")
@click.argument("host")
@click.option("--valid-hours", type=click.IntRange(1, 720), default=24, show_default=True)
@click.pass_context
@friendly_errors
def agent_enroll_token(ctx: click.Context, host: str, valid_hours: int) -> None:
    """A one-time enrolment token for HOST's agent (shown once)."""
    result = client_of(ctx).post_json(
        "/api/v1/agent/enrollment-tokens", {"host": host, "valid_hours": valid_hours}
    )
    click.echo(f"enrolment token for {result['host']} (one use, expires {result['expires_at']}):")
    click.echo(result["enrollment_token"])


@click.group()
def trust() -> None:
    """The CA certificates every client must trust."""


@trust.command("push")
@click.pass_context
@friendly_errors
def trust_push(ctx: click.Context) -> None:
    """Deliver the current trust bundle to every client host."""
    result = client_of(ctx).post_json("/api/v1/trust-bundle/distribute", {})
    state = "queued" if result["queued"] else "NOT queued (queue unreachable)"
    click.echo(f"trust bundle for {result['hosts']} client host(s): {state}")


@trust.command("install-command")
@click.option("--platform", type=click.Choice(["windows", "linux"]), default="windows")
@click.option(
    "--url",
    "public_url",
    envvar="CERTFLEET_PUBLIC_URL",
    default=None,
    help="the API's address as clients reach it (default: --api-url, unless that is loopback)",
)
@click.pass_context
@friendly_errors
def trust_install_command(ctx: click.Context, platform: str, public_url: str | None) -> None:
    """A one-liner that installs the trust bundle on a machine without an agent. It fetches
    the bundle from the API's address and installs it only if the bundle's SHA-256 is the one
    printed into it, so no client trusts a CA fetched unauthenticated."""
    from services.cli.trust import install_command

    line, notes = install_command(client_of(ctx), ctx.obj["api_url"], public_url, platform)
    for note in notes:
        click.echo(note, err=True)
    click.echo(line)


@click.group()
def stack() -> None:
    """Run the services locally."""


@stack.command("run")
@click.option(
    "--concurrency",
    "worker_concurrency",
    type=click.IntRange(1, 64),
    default=os.cpu_count() or 2,
    help="processes per worker (issuer, distributor)",
)
@friendly_errors
def stack_run(worker_concurrency: int) -> None:
    """Run the five services (API, issuer, distributor, expiry watcher and its beat) as
    separate processes until interrupted; fail at once if one does not come up."""
    from services.cli.stack import Stack

    environ = local_secrets.merged(os.environ)
    settings = Settings.from_env(environ)
    secrets_env = {k: environ[k] for k in local_secrets.NAMES if k in environ}
    local = Stack(secrets_env, settings.api_bind, settings.var_dir / "logs", worker_concurrency)

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # leave the `with` block so the children are stopped

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)
    with local:
        click.echo(
            f"api at {local.url}; issuer, distributor, expiry watcher and beat running; "
            f"logs in {local.log_dir}"
        )
        try:
            while not local.failed:  # a service that exits is restarted, unless it crash-loops
                time.sleep(1)
            raise CliError(f"{', '.join(sorted(local.failed))} keeps exiting; see {local.log_dir}")
        except KeyboardInterrupt:
            click.echo("stopping")


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script, e.g. for bash:
    certfleet completion bash > /etc/bash_completion.d/certfleet"""
    from services.cli.main import cli

    completer = get_completion_class(shell)
    assert completer is not None
    click.echo(completer(cli, {}, "certfleet", "_CERTFLEET_COMPLETE").source())


certs.add_command(resources.certs_show)
certs.add_command(resources.certs_revoke)
trust.add_command(resources.trust_bundle)
