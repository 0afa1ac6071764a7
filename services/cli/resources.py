"""`certfleet` commands for the API's resources that have no workflow command of their own:
sites, hosts, authorities, tokens, issuance requests, the audit trail, notification channels,
and one certificate. Listings and single objects print as a table or, with `-o json`, as the
API's JSON. Sites and hosts are named by name or ID."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

from services.cli.client import ApiClient, CliError
from services.cli.common import client_of, emit, emit_one, friendly_errors, writable, write_file

MUTE_HELP = "hours from now (0 unmutes)"


def lookup(client: ApiClient, kind: str, name_or_id: str) -> dict[str, Any]:
    """A site or host by ID or by its (unique) name."""
    path = f"/api/v1/{kind}"
    if name_or_id.isdigit():
        found: dict[str, Any] = client.get_json(f"{path}/{name_or_id}")
        return found
    listing = client.get_json(path, name=name_or_id)
    rows = listing["items"] if isinstance(listing, dict) else listing
    match = [r for r in rows if r["name"] == name_or_id]
    if not match:
        raise CliError(f"no {kind[:-1]} named {name_or_id!r}")
    return match[0]


def delete(ctx: click.Context, kind: str, name_or_id: str) -> None:
    """Delete a site or host named by name or ID."""
    client = client_of(ctx)
    found = lookup(client, kind, name_or_id)
    client.request("DELETE", f"/api/v1/{kind}/{found['id']}")
    click.echo(f"deleted {kind[:-1]} {found['name']}")


def mute_until(hours: float) -> str | None:
    if hours <= 0:
        return None
    return (dt.datetime.now(dt.UTC) + dt.timedelta(hours=hours)).isoformat()


def save_or_print(content: bytes, out: Path | None) -> None:
    if out is None:
        click.echo(content.decode())
    else:
        write_file(writable(out), content)
        click.echo(f"wrote {out}", err=True)


# --- sites -------------------------------------------------------------------------------


@click.group()
def sites() -> None:
    """Sites: their CA, DNS suffixes, IP ranges and maintenance window."""


@sites.command("list")
@click.pass_context
@friendly_errors
def sites_list(ctx: click.Context) -> None:
    """List sites with their CA and DNS suffixes."""
    rows = client_of(ctx).get_json("/api/v1/sites")
    emit(ctx, rows, ("id", "name", "authority", "dns_suffixes", "muted_until"), "sites")


@sites.command("show")
@click.argument("site")
@click.pass_context
@friendly_errors
def sites_show(ctx: click.Context, site: str) -> None:
    """One site, by name or ID."""
    emit_one(ctx, lookup(client_of(ctx), "sites", site), "site")


@sites.command("delete")
@click.argument("site")
@click.confirmation_option(prompt="Delete this site (it must have no hosts)?")
@click.pass_context
@friendly_errors
def sites_delete(ctx: click.Context, site: str) -> None:
    """Delete a site that has no hosts left."""
    delete(ctx, "sites", site)


@sites.command("mute")
@click.argument("site")
@click.option("--hours", type=click.FloatRange(0, 400 * 24), required=True, help=MUTE_HELP)
@click.pass_context
@friendly_errors
def sites_mute(ctx: click.Context, site: str, hours: float) -> None:
    """Mute a site's expiry notices (a retired or rebuilt site)."""
    client = client_of(ctx)
    found = lookup(client, "sites", site)
    result = client.post_json(f"/api/v1/sites/{found['id']}/mute", {"until": mute_until(hours)})
    emit_one(ctx, result, "site")


# --- hosts -------------------------------------------------------------------------------


@click.group()
def hosts() -> None:
    """Hosts: names clients use, roles, delivery method, endpoints to probe."""


@hosts.command("list")
@click.option("--site")
@click.pass_context
@friendly_errors
def hosts_list(ctx: click.Context, site: str | None) -> None:
    """List hosts with their names, roles and delivery method."""
    rows = list(client_of(ctx).paged("/api/v1/hosts", site=site, limit=1000))
    for row in rows:
        row["names"] = row["dns_names"] + row["ip_addresses"]
        row["method"] = (row.get("delivery") or {}).get("method", "none")
    emit(ctx, rows, ("id", "site", "name", "roles", "names", "method"), "hosts")


@hosts.command("show")
@click.argument("host")
@click.pass_context
@friendly_errors
def hosts_show(ctx: click.Context, host: str) -> None:
    """One host, by name or ID."""
    emit_one(ctx, lookup(client_of(ctx), "hosts", host), "host")


@hosts.command("delete")
@click.argument("host")
@click.confirmation_option(prompt="Delete this host?")
@click.pass_context
@friendly_errors
def hosts_delete(ctx: click.Context, host: str) -> None:
    """Delete a host (by name or ID)."""
    delete(ctx, "hosts", host)


# --- authorities -------------------------------------------------------------------------


@click.group()
def authorities() -> None:
    """Certificate authorities."""


AUTHORITY_COLUMNS = ("id", "name", "kind", "status", "key_bits", "not_after")


@authorities.command("list")
@click.pass_context
@friendly_errors
def authorities_list(ctx: click.Context) -> None:
    """List certificate authorities."""
    emit(ctx, client_of(ctx).get_json("/api/v1/authorities"), AUTHORITY_COLUMNS, "authorities")


@authorities.command("show")
@click.argument("authority_id", type=int)
@click.pass_context
@friendly_errors
def authorities_show(ctx: click.Context, authority_id: int) -> None:
    """One certificate authority."""
    emit_one(ctx, client_of(ctx).get_json(f"/api/v1/authorities/{authority_id}"), "authority")


@authorities.command("create")
@click.argument("name")
@click.option("--kind", type=click.Choice(["root", "intermediate"]), default="root")
@click.option("--parent", help="parent authority's name (intermediate)")
@click.option("--key-bits", type=click.Choice(["2048", "3072", "4096"]), default="3072")
@click.option("--validity-days", type=click.IntRange(30, 36500))
@click.pass_context
@friendly_errors
def authorities_create(
    ctx: click.Context,
    name: str,
    kind: str,
    parent: str | None,
    key_bits: str,
    validity_days: int | None,
) -> None:
    """Create a CA; the issuer generates its key (`show` it until it is active)."""
    body = {
        "name": name,
        "kind": kind,
        "parent": parent,
        "key_bits": int(key_bits),
        "validity_days": validity_days,
    }
    emit_one(ctx, client_of(ctx).post_json("/api/v1/authorities", body), "authority")


@authorities.command("certificate")
@click.argument("authority_id", type=int)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
@friendly_errors
def authorities_certificate(ctx: click.Context, authority_id: int, out: Path | None) -> None:
    """The CA certificate, PEM."""
    path = f"/api/v1/authorities/{authority_id}/certificate.pem"
    save_or_print(client_of(ctx).request("GET", path).content, out)


@authorities.command("crl")
@click.argument("authority_id", type=int)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.pass_context
@friendly_errors
def authorities_crl(ctx: click.Context, authority_id: int, out: Path) -> None:
    """The CA's current CRL, DER (what its CRL distribution point serves)."""
    save_or_print(
        client_of(ctx).request("GET", f"/api/v1/authorities/{authority_id}/crl").content, out
    )


# --- tokens ------------------------------------------------------------------------------


@click.group()
def tokens() -> None:
    """API tokens (admin)."""


@tokens.command("list")
@click.pass_context
@friendly_errors
def tokens_list(ctx: click.Context) -> None:
    """List API tokens (never their secrets)."""
    rows = client_of(ctx).get_json("/api/v1/tokens")
    emit(ctx, rows, ("id", "name", "role", "site_id", "prefix", "last_used_at"), "tokens")


@tokens.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(["admin", "operator", "auditor"]), required=True)
@click.option("--site", help="scope an operator to one site")
@click.pass_context
@friendly_errors
def tokens_create(ctx: click.Context, name: str, role: str, site: str | None) -> None:
    """Create a token; its secret is shown once."""
    body = {"name": name, "role": role, "site": site}
    emit_one(ctx, client_of(ctx).post_json("/api/v1/tokens", body), "token (secret shown once)")


@tokens.command("revoke")
@click.argument("token_id", type=int)
@click.pass_context
@friendly_errors
def tokens_revoke(ctx: click.Context, token_id: int) -> None:
    """Revoke an API token."""
    emit_one(ctx, client_of(ctx).post_json(f"/api/v1/tokens/{token_id}/revoke", {}), "token")


# --- issuance requests -------------------------------------------------------------------


@click.group()
def requests() -> None:
    """Issuance requests and why one failed."""


REQUEST_COLUMNS = ("id", "host", "status", "reason", "certificate_id", "created_at")


@requests.command("list")
@click.option("--status", type=click.Choice(["queued", "signing", "issued", "failed"]))
@click.pass_context
@friendly_errors
def requests_list(ctx: click.Context, status: str | None) -> None:
    """List issuance requests, optionally by status."""
    path = "/api/v1/issuance-requests"
    rows = list(client_of(ctx).paged(path, status=status, limit=1000))
    emit(ctx, rows, REQUEST_COLUMNS, "issuance requests")


@requests.command("show")
@click.argument("request_id", type=int)
@click.option("--wait", type=click.FloatRange(0, 30), default=0, help="seconds to wait for it")
@click.pass_context
@friendly_errors
def requests_show(ctx: click.Context, request_id: int, wait: float) -> None:
    """One issuance request and, if it failed, why."""
    path = f"/api/v1/issuance-requests/{request_id}"
    emit_one(ctx, client_of(ctx).get_json(path, wait=wait or None), "issuance request")


# --- audit trail -------------------------------------------------------------------------


@click.command()
@click.option("--site")
@click.option("--host")
@click.option("--kind", help="exact kind, or a prefix ending in '.' (certificate.)")
@click.option("--actor")
@click.option("--since", type=click.DateTime(), help="UTC")
@click.option("--until", type=click.DateTime(), help="UTC")
@click.option("--limit", type=click.IntRange(1, 100000), default=100, show_default=True)
@click.pass_context
@friendly_errors
def events(
    ctx: click.Context,
    site: str | None,
    host: str | None,
    kind: str | None,
    actor: str | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
    limit: int,
) -> None:
    """The audit trail, newest first."""
    rows = take(
        client_of(ctx).paged(
            "/api/v1/events",
            site=site,
            host=host,
            kind=kind,
            actor=actor,
            since=utc(since),
            until=utc(until),
            limit=min(limit, 1000),
        ),
        limit,
    )
    for row in rows:
        row["details"] = ", ".join(f"{k}={v}" for k, v in (row.get("data") or {}).items())
    emit(ctx, rows, ("id", "at", "kind", "actor", "details"), "events")


def utc(value: dt.datetime | None) -> str | None:
    return None if value is None else value.replace(tzinfo=dt.UTC).isoformat()


def take(items: Iterable[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    out = []
    for item in items:
        out.append(item)
        if len(out) >= limit:
            break
    return out


# --- notification channels ---------------------------------------------------------------


@click.group()
def channels() -> None:
    """Where expiry notices go: e-mail or webhook."""


@channels.command("list")
@click.pass_context
@friendly_errors
def channels_list(ctx: click.Context) -> None:
    """List notification channels."""
    rows = client_of(ctx).get_json("/api/v1/notification-channels")
    emit(ctx, rows, ("id", "name", "kind", "target", "thresholds", "muted_until"), "channels")


@channels.command("create")
@click.argument("name")
@click.option("--kind", type=click.Choice(["email", "webhook"]), required=True)
@click.option("--target", required=True, help="e-mail addresses (comma-separated) or URL")
@click.option("--threshold", "thresholds", type=int, multiple=True, help="days; repeatable")
@click.pass_context
@friendly_errors
def channels_create(
    ctx: click.Context, name: str, kind: str, target: str, thresholds: tuple[int, ...]
) -> None:
    """Add a channel: an e-mail address or a webhook URL, and the days-left thresholds."""
    body: dict[str, Any] = {"name": name, "kind": kind, "target": target}
    if thresholds:
        body["thresholds"] = sorted(set(thresholds), reverse=True)
    emit_one(ctx, client_of(ctx).post_json("/api/v1/notification-channels", body), "channel")


@channels.command("mute")
@click.argument("channel_id", type=int)
@click.option("--hours", type=click.FloatRange(0, 400 * 24), required=True, help=MUTE_HELP)
@click.pass_context
@friendly_errors
def channels_mute(ctx: click.Context, channel_id: int, hours: float) -> None:
    """Mute a channel's notices for some hours (0 unmutes)."""
    path = f"/api/v1/notification-channels/{channel_id}/mute"
    emit_one(ctx, client_of(ctx).post_json(path, {"until": mute_until(hours)}), "channel")


# --- one certificate, the trust bundle (added to `certs` and `trust`) ----------------------


@click.command("show")
@click.argument("certificate_id", type=int)
@click.pass_context
@friendly_errors
def certs_show(ctx: click.Context, certificate_id: int) -> None:
    """One certificate: names, validity, renewal state."""
    path = f"/api/v1/certificates/{certificate_id}"
    emit_one(ctx, client_of(ctx).get_json(path), "certificate")


@click.command("revoke")
@click.argument("certificate_id", type=int)
@click.option("--reason", default="unspecified", show_default=True, help="RFC 5280 reason")
@click.option("--renew/--no-renew", default=True, show_default=True, help="issue a replacement")
@click.confirmation_option(prompt="Revoke this certificate? Clients refuse it at once.")
@click.pass_context
@friendly_errors
def certs_revoke(ctx: click.Context, certificate_id: int, reason: str, renew: bool) -> None:
    """Revoke a certificate (it goes on its CA's CRL); a replacement is issued unless
    --no-renew."""
    path = f"/api/v1/certificates/{certificate_id}/revoke"
    body = {"reason": reason, "renew": renew}
    emit_one(ctx, client_of(ctx).post_json(path, body), "revocation")


@click.command("bundle")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
@friendly_errors
def trust_bundle(ctx: click.Context, out: Path | None) -> None:
    """Every CA certificate clients must trust now, PEM."""
    save_or_print(client_of(ctx).request("GET", "/api/v1/trust-bundle").content, out)


COMMANDS = (sites, hosts, authorities, tokens, requests, events, channels)
