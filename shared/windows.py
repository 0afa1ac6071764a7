"""PowerShell that installs a certificate on a Windows XProtect server, generated as text.

No Windows runs here, so the scripts are built from a plan and tested as text and structure.
The contract with whoever runs them (the host agent, or an operator beside a dropped PFX):
progress lines start with "certfleet:"; the last line is `certfleet-result: {json}` whose
"status" is installed, rolled_back or failed; the exit code is one of the EXIT_* values.
Every value from the plan enters the script as a single-quoted PowerShell literal.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from types import MappingProxyType
from urllib.parse import urlsplit

# Which XProtect certificate groups each host role binds (DOMAIN.md: may change; change it here).
XPROTECT_GROUPS_BY_ROLE: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "management": ("Server",),
        "recording": ("Server", "StreamingMedia"),
        "failover": ("Server", "StreamingMedia"),
        "mobile": ("MobileServer",),
        "event": ("EventServer",),
        "client": (),
        "other": (),
    }
)
# The IDs Milestone's own PowerShell module hard-codes. The script resolves IDs from
# `/listcertificategroups` by name; these are used only when the listing names a group
# differently but still shows its well-known ID.
XPROTECT_GROUP_IDS: Mapping[str, str] = MappingProxyType(
    {
        "Server": "84430eb7-847c-422d-aa00-7915cd0d7a65",
        "StreamingMedia": "549df21d-047c-456b-958e-99e65dd8b3ec",
        "MobileServer": "76cfc719-a852-4210-913e-703eadab139a",
        "EventServer": "7e02e0f5-549d-4113-b8de-bda2c1f38dbf",
    }
)
XPROTECT_SERVICES: tuple[str, ...] = (
    "Milestone XProtect Management Server",
    "Milestone XProtect Recording Server",
    "Milestone XProtect Mobile Server",
    "Milestone XProtect Event Server",
)
SERVER_CONFIGURATOR = r"C:\Program Files\Milestone\Server Configurator\ServerConfigurator.exe"
RESULT_PREFIX = "certfleet-result:"
EXIT_INSTALLED = 0
EXIT_FAILED = 1
EXIT_ROLLED_BACK = 2
EXIT_NOT_ELEVATED = 3

LINUX_TRUST_FILE = "/usr/local/share/ca-certificates/certfleet.crt"

_GROUP_ORDER = tuple(dict.fromkeys(g for gs in XPROTECT_GROUPS_BY_ROLE.values() for g in gs))
_THUMBPRINT = re.compile(r"[0-9A-Fa-f]{40}")
# PowerShell ends a single-quoted string at any of these; doubling one makes it literal.
_PS_SINGLE_QUOTES = re.compile("['\u2018\u2019\u201a\u201b]")
_FORBIDDEN = re.compile("[\x00-\x1f\x7f\u2028\u2029]")


def certificate_groups(roles: Iterable[str]) -> tuple[str, ...]:
    """The groups a host with these roles binds, each once, in one fixed order.
    An unknown role is an error rather than a host that silently binds nothing."""
    if isinstance(roles, str):
        raise TypeError("roles must be a collection of role names, not one string")
    wanted: set[str] = set()
    for role in roles:
        if role not in XPROTECT_GROUPS_BY_ROLE:
            raise ValueError(f"unknown host role {role!r}")
        wanted.update(XPROTECT_GROUPS_BY_ROLE[role])
    return tuple(group for group in _GROUP_ORDER if group in wanted)


def normalize_thumbprint(value: str) -> str:
    """A SHA-1 thumbprint as Windows shows it: 40 upper-case hex digits."""
    if not isinstance(value, str) or not _THUMBPRINT.fullmatch(value):
        raise ValueError("a thumbprint must be 40 hexadecimal characters")
    return value.upper()


def powershell_quote(value: str) -> str:
    """`value` as a PowerShell single-quoted literal. Refuses line breaks, NUL and other
    control characters: none belongs in a path, name or URL, and they hide script changes."""
    if not isinstance(value, str) or not value:
        raise ValueError("an empty value cannot be put in the script")
    if _FORBIDDEN.search(value):
        raise ValueError(f"control characters (newline, NUL...) are not allowed: {value!r}")
    return "'" + _PS_SINGLE_QUOTES.sub(lambda m: m.group(0) * 2, value) + "'"


@dataclass(frozen=True)
class InstallPlan:
    """What one Windows server should end up with. It names the file holding the PFX password
    and never the password itself: the script reads that file and deletes it."""

    pfx_path: str
    pfx_password_path: str
    thumbprint: str
    old_thumbprint: str | None = None
    ca_certificate_paths: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    service_names: tuple[str, ...] = XPROTECT_SERVICES
    probe_endpoints: tuple[tuple[str, int], ...] = ()
    server_configurator_path: str = SERVER_CONFIGURATOR
    bind_retries: int = 5
    bind_retry_delay_seconds: int = 30
    probe_attempts: int = 6
    probe_delay_seconds: int = 20
    probe_timeout_seconds: int = 10

    def __post_init__(self) -> None:
        object.__setattr__(self, "thumbprint", normalize_thumbprint(self.thumbprint))
        old = normalize_thumbprint(self.old_thumbprint) if self.old_thumbprint else None
        object.__setattr__(self, "old_thumbprint", old)
        for text in (
            self.pfx_path,
            self.pfx_password_path,
            self.server_configurator_path,
            *self.ca_certificate_paths,
            *self.service_names,
        ):
            powershell_quote(text)
        for host, port in self.probe_endpoints:
            _check_endpoint(host, port)
        certificate_groups(self.roles)
        counts = (self.bind_retries, self.bind_retry_delay_seconds, self.probe_delay_seconds)
        if min(counts) < 0 or self.probe_attempts < 1 or self.probe_timeout_seconds < 1:
            raise ValueError("retries and delays must be >= 0, probe attempts and timeout >= 1")


def _check_endpoint(host: str, port: int) -> None:
    powershell_quote(host)
    if any(ch.isspace() for ch in host):
        raise ValueError(f"a probe host has no spaces: {host!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"a probe port is 1-65535, not {port!r}")


def _ps_array(values: Sequence[str]) -> str:
    if not values:
        return "@()"
    return "@(\n" + ",\n".join(f"    {powershell_quote(v)}" for v in values) + "\n)"


def _ps_endpoints(endpoints: Sequence[tuple[str, int]]) -> str:
    items = [f"@{{ HostName = {powershell_quote(h)}; Port = {p} }}" for h, p in endpoints]
    return "@(\n" + ",\n".join(f"    {item}" for item in items) + "\n)" if items else "@()"


def _ps_group_ids(groups: Sequence[str]) -> str:
    pairs = [
        f"    {powershell_quote(g)} = {powershell_quote(XPROTECT_GROUP_IDS[g])}"
        for g in groups
        if g in XPROTECT_GROUP_IDS
    ]
    return "@{\n" + "\n".join(pairs) + "\n}" if pairs else "@{}"


def render_install_script(plan: InstallPlan) -> str:
    """The script that imports, grants key access, binds the plan's groups, probes, and then
    removes the old certificate or rolls back to it. A host whose roles bind no group (a
    client) gets only the CA certificates, and its PFX password file is still deleted."""
    groups = certificate_groups(plan.roles)
    if not groups:
        return _trust_script(plan.ca_certificate_paths, plan.pfx_password_path)
    old = plan.old_thumbprint if plan.old_thumbprint != plan.thumbprint else None
    values = [
        ("PfxPath", powershell_quote(plan.pfx_path)),
        ("PasswordPath", powershell_quote(plan.pfx_password_path)),
        ("Thumbprint", powershell_quote(plan.thumbprint)),
        ("OldThumbprint", powershell_quote(old) if old else "$null"),
        ("CaCertificatePaths", _ps_array(plan.ca_certificate_paths)),
        ("CertificateGroups", _ps_array(groups)),
        ("KnownGroupIds", _ps_group_ids(groups)),
        ("ServiceNames", _ps_array(plan.service_names)),
        ("ProbeEndpoints", _ps_endpoints(plan.probe_endpoints)),
        ("ServerConfigurator", powershell_quote(plan.server_configurator_path)),
        ("BindRetries", str(plan.bind_retries)),
        ("BindRetryDelaySeconds", str(plan.bind_retry_delay_seconds)),
        ("ProbeAttempts", str(plan.probe_attempts)),
        ("ProbeDelaySeconds", str(plan.probe_delay_seconds)),
        ("ProbeTimeoutMilliseconds", str(plan.probe_timeout_seconds * 1000)),
    ]
    bind = "        Set-CertificateGroupBinding -Group {} -BindThumbprint $Thumbprint"
    binds = "\n".join(bind.format(powershell_quote(g)) for g in groups)
    return _assemble(
        "install a server certificate on an XProtect server",
        values,
        _COMMON_FUNCTIONS + _SERVER_FUNCTIONS,
        _INSTALL_MAIN.replace("@@BINDINGS@@", binds),
    )


def render_trust_script(ca_certificate_paths: Sequence[str]) -> str:
    """For a client machine: put the CA certificates into Cert:\\LocalMachine\\Root."""
    if isinstance(ca_certificate_paths, str) or not ca_certificate_paths:
        raise ValueError("give at least one CA certificate path (as a sequence of paths)")
    return _trust_script(tuple(ca_certificate_paths), None)


def _trust_script(ca_paths: Sequence[str], password_path: str | None) -> str:
    values = [
        ("Thumbprint", "''"),
        ("PasswordPath", powershell_quote(password_path) if password_path else "$null"),
        ("CaCertificatePaths", _ps_array(ca_paths)),
    ]
    return _assemble("trust the certfleet CA certificates", values, _COMMON_FUNCTIONS, _TRUST_MAIN)


def _assemble(purpose: str, values: Sequence[tuple[str, str]], functions: str, main: str) -> str:
    header = _HEADER.replace("@@PURPOSE@@", purpose)
    plan = "\n".join(f"${name} = {value}" for name, value in values)
    return "\n".join([header, "# The plan", plan, _CONSTANTS, functions, main])


def trust_one_liner(bundle_url: str, sha256: str) -> str:
    """One line for an elevated Windows PowerShell: download the PEM bundle, refuse it unless
    its SHA-256 is `sha256` (the bundle may come over plain HTTP: the fingerprint printed into
    the line is what authenticates it), and add every certificate in it to
    Cert:\\LocalMachine\\Root."""
    url = powershell_quote(_check_url(bundle_url))
    expected = _check_sha256(sha256)
    pattern = "'-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\\s]+)-----END CERTIFICATE-----'"
    return (
        "$ErrorActionPreference = 'Stop'; "
        "[Net.ServicePointManager]::SecurityProtocol = "
        "[Net.ServicePointManager]::SecurityProtocol -bor [Net.SecurityProtocolType]::Tls12; "
        f"$bytes = (Invoke-WebRequest -UseBasicParsing -Uri {url}).RawContentStream.ToArray(); "
        "$sum = -join ([Security.Cryptography.SHA256]::Create().ComputeHash($bytes) | "
        "ForEach-Object { $_.ToString('x2') }); "
        f"if ($sum -ne '{expected}') {{ throw ('the trust bundle is not the one this command "
        f"was made for (SHA-256 ' + $sum + ', expected {expected}): nothing installed; print a new "
        "one with certfleet trust install-command') }; "
        "$pem = [Text.Encoding]::ASCII.GetString($bytes); "
        f"$found = [regex]::Matches($pem, {pattern}); "
        "if ($found.Count -eq 0) { throw 'no certificate in the bundle' }; "
        "foreach ($m in $found) { "
        "$file = Join-Path $env:TEMP ('certfleet-' + [guid]::NewGuid().ToString('N') + '.cer'); "
        "[IO.File]::WriteAllBytes($file, "
        "[Convert]::FromBase64String(($m.Groups[1].Value -replace '\\s', ''))); "
        "try { Import-Certificate -FilePath $file -CertStoreLocation 'Cert:\\LocalMachine\\Root' } "
        "finally { Remove-Item -LiteralPath $file -Force } }"
    )


def linux_trust_one_liner(bundle_url: str, sha256: str) -> str:
    """Debian/Ubuntu: fetch the bundle to a temporary file, refuse it unless its SHA-256 is
    `sha256`, then put it in the local CA directory and rebuild the store. The subshell exits
    non-zero on any failure and removes its temporary file either way."""
    url = shlex.quote(_check_url(bundle_url))
    expected = _check_sha256(sha256)
    refused = shlex.quote(
        "certfleet: the trust bundle is not the one this command was made for: nothing "
        "installed; print a new one with certfleet trust install-command"
    )
    return (
        "(set -e; f=$(mktemp); trap 'rm -f \"$f\"' EXIT; "
        f'curl -fsSL {url} -o "$f"; '
        f'echo "{expected}  $f" | sha256sum -c --quiet - || {{ echo {refused} >&2; exit 1; }}; '
        f'sudo install -m 0644 "$f" {LINUX_TRUST_FILE}; sudo update-ca-certificates)'
    )


def _check_sha256(value: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ValueError("not a SHA-256 in lowercase hex")
    return value


def _check_url(url: str) -> str:
    powershell_quote(url)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or re.search(r"\s", url):
        raise ValueError(f"not an http(s) URL: {url!r}")
    return url


def _ps(name: str) -> str:
    """A PowerShell fragment shipped beside this module in shared/powershell/."""
    return (files("shared") / "powershell" / name).read_text(encoding="utf-8")


_HEADER = _ps("header.ps1")
_CONSTANTS = _ps("constants.ps1")
# Functions either return a value and write nothing, or write progress and return nothing:
# PowerShell would mix anything a value-returning function writes into its value.
_COMMON_FUNCTIONS = _ps("common.ps1")
_SERVER_FUNCTIONS = _ps("server.ps1")
_NOT_ELEVATED = _ps("not_elevated.ps1")
_FINISH = _ps("finish.ps1")
_INSTALL_MAIN = _NOT_ELEVATED + _ps("install_main.ps1") + _FINISH
_TRUST_MAIN = _NOT_ELEVATED + _ps("trust_main.ps1") + _FINISH
