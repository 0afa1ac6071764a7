"""The `certfleet` command: a client of the API, plus local admin commands.

Only the root group lives here; each command is imported when it runs (services.cli.lazy),
so `certfleet --help` starts in a few hundredths of a second instead of importing SQLAlchemy,
alembic, Celery and rich first."""

from __future__ import annotations

import os

import click

from services.cli.lazy import Lazy, LazyGroup

COMMANDS = "services.cli.commands"
RESOURCES = "services.cli.resources"

# name -> where it lives, and its one-line help as the listing shows it
LAZY = {
    "agent": Lazy(f"{COMMANDS}:agent", "Host agents."),
    "apply": Lazy(
        f"{COMMANDS}:apply", "Apply an inventory file (YAML or JSON) of sites and hosts."
    ),
    "authorities": Lazy(f"{RESOURCES}:authorities", "Certificate authorities."),
    "campaign": Lazy(
        "services.cli.campaigns:campaign",
        "Renew part of the fleet at a chosen pace, or rotate a CA.",
    ),
    "certs": Lazy(f"{COMMANDS}:certs", "Issued certificates."),
    "channels": Lazy(f"{RESOURCES}:channels", "Where expiry notices go: e-mail or webhook."),
    "completion": Lazy(
        f"{COMMANDS}:completion",
        "Print the shell completion script, e.g. for bash:\n"
        "certfleet completion bash > /etc/bash_completion.d/certfleet",
    ),
    "deliveries": Lazy(
        f"{COMMANDS}:deliveries",
        "Where certificates and trust bundles are on their way to hosts.",
    ),
    "doctor": Lazy(
        "services.cli.doctor:doctor",
        "Check a deployment: database and schema, Redis, a worker on every queue, the beat, "
        "the periodic tasks' last success, CA expiry and clock skew.",
    ),
    "events": Lazy(f"{RESOURCES}:events", "The audit trail, newest first."),
    "export": Lazy(
        f"{COMMANDS}:export",
        "Export a certificate: PEM chain, or a Windows-importable PFX with its key.",
    ),
    "hosts": Lazy(
        f"{RESOURCES}:hosts",
        "Hosts: names clients use, roles, delivery method, endpoints to probe.",
    ),
    "init": Lazy(
        f"{COMMANDS}:init",
        "Create the schema, the first root CA and an admin token (local; needs the database).",
    ),
    "issue": Lazy(
        f"{COMMANDS}:issue", "Request certificates for hosts (by name, --site or --all)."
    ),
    "report": Lazy(f"{COMMANDS}:report", "Reports."),
    "requests": Lazy(f"{RESOURCES}:requests", "Issuance requests and why one failed."),
    "sites": Lazy(
        f"{RESOURCES}:sites",
        "Sites: their CA, DNS suffixes, IP ranges and maintenance window.",
    ),
    "stack": Lazy(f"{COMMANDS}:stack", "Run the services locally."),
    "tokens": Lazy(f"{RESOURCES}:tokens", "API tokens (admin)."),
    "trust": Lazy(f"{COMMANDS}:trust", "The CA certificates every client must trust."),
}


def default_api_url() -> str:
    from shared.settings import DEFAULT_API_BIND

    return os.environ.get("CERTFLEET_API_URL") or (
        "http://" + (os.environ.get("CERTFLEET_API_BIND") or DEFAULT_API_BIND)
    )


@click.group(cls=LazyGroup, lazy=LAZY)
@click.option("--api-url", default=default_api_url, show_default="$CERTFLEET_API_URL")
@click.option("--token", envvar="CERTFLEET_TOKEN", default=None, help="default: var/admin.token")
@click.option("--output", "-o", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def cli(ctx: click.Context, api_url: str, token: str | None, output: str) -> None:
    """certfleet: certificates for XProtect fleets."""
    ctx.obj = {"api_url": api_url, "token": token, "output": output}


if __name__ == "__main__":
    cli()
