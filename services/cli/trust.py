"""`certfleet trust install-command`: the one-liner for a client without an agent, pinned to
the bundle's SHA-256 as the API serves it now."""

from __future__ import annotations

import hashlib
import ipaddress
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from services.cli.client import ApiClient, CliError
from shared.windows import linux_trust_one_liner, trust_one_liner

BUNDLE_PATH = "/api/v1/trust-bundle"


def install_command(
    client: ApiClient, api_url: str, public_url: str | None, platform: str
) -> tuple[str, list[str]]:
    """The one-liner and the notes for the operator (what the fingerprint pins)."""
    base = (public_url or api_url).rstrip("/")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise CliError("--url must be an http(s) address, like https://certfleet.example.com")
    if public_url is None and _loopback(parts.hostname):
        raise CliError(
            f"the API is at {api_url} here, an address only this machine reaches: give the "
            "one clients use with --url (or CERTFLEET_PUBLIC_URL), e.g. "
            "--url https://certfleet.example.com"
        )
    bundle = client.request("GET", BUNDLE_PATH).content
    try:
        anchors = x509.load_pem_x509_certificates(bundle)
    except ValueError as exc:
        raise CliError(f"the API at {api_url} has no CA yet: run certfleet init") from exc
    digest = hashlib.sha256(bundle).hexdigest()
    url = base + BUNDLE_PATH
    make = trust_one_liner if platform == "windows" else linux_trust_one_liner
    try:
        line = make(url, digest)
    except ValueError as exc:  # a quote or a space in the address
        raise CliError(f"--url {public_url or api_url!r} cannot go into a command: {exc}") from exc
    notes = [f"# the bundle at {url}: SHA-256 {digest}, {len(anchors)} CA certificate(s):"]
    for anchor in anchors:
        fingerprint = anchor.fingerprint(hashes.SHA256()).hex(":").upper()
        notes.append(f"#   {anchor.subject.rfc4514_string()} (SHA-256 {fingerprint})")
    notes.append("# when a CA is added or retired the bundle changes: print the command again")
    return line, notes


def _loopback(hostname: str) -> bool:
    if hostname.lower() in ("localhost", "localhost.localdomain") or hostname.endswith(
        ".localhost"
    ):
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False
