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


def trust_one_liner(bundle_url: str) -> str:
    """One line for an elevated Windows PowerShell: download the PEM bundle and add every
    certificate in it to Cert:\\LocalMachine\\Root."""
    url = powershell_quote(_check_url(bundle_url))
    pattern = "'-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\\s]+)-----END CERTIFICATE-----'"
    return (
        "$ErrorActionPreference = 'Stop'; "
        "[Net.ServicePointManager]::SecurityProtocol = "
        "[Net.ServicePointManager]::SecurityProtocol -bor [Net.SecurityProtocolType]::Tls12; "
        f"$pem = (Invoke-WebRequest -UseBasicParsing -Uri {url}).Content; "
        "if ($pem -is [byte[]]) { $pem = [Text.Encoding]::ASCII.GetString($pem) }; "
        f"$found = [regex]::Matches($pem, {pattern}); "
        "if ($found.Count -eq 0) { throw 'no certificate in the bundle' }; "
        "foreach ($m in $found) { "
        "$file = Join-Path $env:TEMP ('certfleet-' + [guid]::NewGuid().ToString('N') + '.cer'); "
        "[IO.File]::WriteAllBytes($file, "
        "[Convert]::FromBase64String(($m.Groups[1].Value -replace '\\s', ''))); "
        "try { Import-Certificate -FilePath $file -CertStoreLocation 'Cert:\\LocalMachine\\Root' } "
        "finally { Remove-Item -LiteralPath $file -Force } }"
    )


def linux_trust_one_liner(bundle_url: str) -> str:
    """Debian/Ubuntu: fetch the bundle into the local CA directory and rebuild the store."""
    url = shlex.quote(_check_url(bundle_url))
    return f"sudo curl -fsSL {url} -o {LINUX_TRUST_FILE} && sudo update-ca-certificates"


def _check_url(url: str) -> str:
    powershell_quote(url)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or re.search(r"\s", url):
        raise ValueError(f"not an http(s) URL: {url!r}")
    return url


_HEADER = r"""# certfleet: @@PURPOSE@@. Generated by certfleet; do not edit.
# Run elevated: powershell.exe -NoProfile -ExecutionPolicy Bypass -File <this file>
# Exit codes: 0 installed, 1 failed, 2 rolled back, 3 not elevated. The last output line is
# certfleet-result: followed by compact JSON with status, thumbprint and message.
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
"""

_CONSTANTS = r"""
$MyStore = 'Cert:\LocalMachine\My'
$RootStore = 'Cert:\LocalMachine\Root'
$Outcome = @{ Status = 'failed'; ExitCode = 1; Message = ''; Restored = $null }
"""

# Functions either return a value and write nothing, or write progress and return nothing:
# PowerShell would mix anything a value-returning function writes into its value.
_COMMON_FUNCTIONS = r"""
function Write-Certfleet {
    param([string]$Message)
    Write-Output ('certfleet: ' + ($Message -replace '\s*[\r\n]+\s*', ' | '))
}

function Write-Result {
    $record = [ordered]@{
        status = $Outcome.Status
        thumbprint = $Thumbprint
        message = $Outcome.Message
    }
    if ($Outcome.Restored) { $record['restored'] = $Outcome.Restored }
    Write-Output ('certfleet-result: ' + (ConvertTo-Json -InputObject $record -Compress))
}

function Test-Administrator {
    $identity = [System.Security.Principal.WindowsIdentity]::GetCurrent()
    $principal = [System.Security.Principal.WindowsPrincipal]$identity
    return $principal.IsInRole([System.Security.Principal.WindowsBuiltInRole]::Administrator)
}

function Resolve-PlanPath {
    # Relative paths are relative to this script, so it can sit beside a dropped PFX.
    param([string]$Path)
    if ([System.IO.Path]::IsPathRooted($Path)) { return $Path }
    $base = $PSScriptRoot
    if (-not $base) { $base = (Get-Location).ProviderPath }
    return (Join-Path -Path $base -ChildPath $Path)
}

function Import-TrustedCertificates {
    foreach ($path in $CaCertificatePaths) {
        $imported = @(Import-Certificate -FilePath $path -CertStoreLocation $RootStore)
        foreach ($ca in $imported) {
            Write-Certfleet ('trusted CA {0} ({1})' -f $ca.Subject, $ca.Thumbprint)
        }
    }
}
"""

_SERVER_FUNCTIONS = r"""
$RsaExtensions = [System.Security.Cryptography.X509Certificates.RSACertificateExtensions]
$ExitCodeMeanings = @{
    0 = 'success'
    -1 = 'unknown error'
    -2 = 'invalid arguments'
    -3 = 'invalid argument value'
    -4 = 'another instance is running'
}
$State = @{ BindingStarted = $false; GroupIds = @{} }

function Import-ServerCertificate {
    $imported = @()
    try {
        $raw = Get-Content -LiteralPath $PasswordPath -Raw
        if ([string]::IsNullOrWhiteSpace($raw)) { throw 'the PFX password file is empty' }
        $password = ConvertTo-SecureString -String ($raw.Trim()) -AsPlainText -Force
        $raw = $null
        $pfx = @{ FilePath = $PfxPath; CertStoreLocation = $MyStore; Password = $password }
        $imported = @(Import-PfxCertificate @pfx | Where-Object { $_.Thumbprint -eq $Thumbprint })
    } finally {
        Remove-Item -LiteralPath $PasswordPath -Force -ErrorAction SilentlyContinue
    }
    if (Test-Path -LiteralPath $PasswordPath) {
        Write-Certfleet 'WARNING: could not delete the PFX password file'
    } else {
        Write-Certfleet 'deleted the PFX password file'
    }
    if ($imported.Count -eq 0) { throw ('the PFX does not hold certificate {0}' -f $Thumbprint) }
    if (-not $imported[0].HasPrivateKey) { throw 'the imported certificate has no private key' }
    Write-Certfleet ('imported {0} into {1}' -f $Thumbprint, $MyStore)
}

function Get-PrivateKeyFile {
    # CNG keys live under Crypto\Keys, CSP keys under Crypto\RSA\MachineKeys.
    # $cert.PrivateKey can be null or throw for CNG keys, so ask the RSA extension method.
    param([System.Security.Cryptography.X509Certificates.X509Certificate2]$Certificate)
    $key = $RsaExtensions::GetRSAPrivateKey($Certificate)
    if ($null -eq $key) { throw 'the new certificate has no RSA private key' }
    $cng = 'Microsoft\Crypto\Keys'
    $csp = 'Microsoft\Crypto\RSA\MachineKeys'
    try {
        if ($key -is [System.Security.Cryptography.RSACng]) {
            $name = $key.Key.UniqueName
            $folders = @($cng, $csp)
        } elseif ($key -is [System.Security.Cryptography.RSACryptoServiceProvider]) {
            $name = $key.CspKeyContainerInfo.UniqueKeyContainerName
            $folders = @($csp, $cng)
        } else {
            throw ('unsupported private key type {0}' -f $key.GetType().FullName)
        }
    } finally {
        $key.Dispose()
    }
    if ([string]::IsNullOrWhiteSpace($name)) { throw 'the private key has no unique name' }
    if ([System.IO.Path]::IsPathRooted($name) -and (Test-Path -LiteralPath $name)) {
        return $name
    }
    foreach ($folder in $folders) {
        $candidate = Join-Path -Path (Join-Path -Path $env:ProgramData -ChildPath $folder) $name
        if (Test-Path -LiteralPath $candidate) { return $candidate }
    }
    throw ('no key file {0} under {1}\Microsoft\Crypto' -f $name, $env:ProgramData)
}

function ConvertTo-ServiceIdentity {
    # StartName as Win32_Service reports it; built-in accounts by SID, since
    # 'LocalSystem' does not translate as an account name.
    param([string]$Account)
    $builtIn = @{
        'LocalSystem' = 'S-1-5-18'
        'NT AUTHORITY\SYSTEM' = 'S-1-5-18'
        'NT AUTHORITY\LocalService' = 'S-1-5-19'
        'NT AUTHORITY\LOCAL SERVICE' = 'S-1-5-19'
        'NT AUTHORITY\NetworkService' = 'S-1-5-20'
        'NT AUTHORITY\NETWORK SERVICE' = 'S-1-5-20'
    }
    if ($builtIn.ContainsKey($Account)) {
        $sid = $builtIn[$Account]
        return (New-Object System.Security.Principal.SecurityIdentifier $sid)
    }
    if ($Account.StartsWith('.\')) { $Account = $env:COMPUTERNAME + $Account.Substring(1) }
    return (New-Object System.Security.Principal.NTAccount $Account)
}

function Grant-PrivateKeyAccess {
    $certificate = Get-Item -LiteralPath ($MyStore + '\' + $Thumbprint)
    $keyFile = Get-PrivateKeyFile -Certificate $certificate
    $services = @(Get-CimInstance -ClassName Win32_Service)
    $granted = @{}
    foreach ($serviceName in $ServiceNames) {
        $service = @($services | Where-Object {
            $_.Name -eq $serviceName -or $_.DisplayName -eq $serviceName
        })
        if ($service.Count -eq 0) {
            Write-Certfleet ('service {0} is not installed here; skipped' -f $serviceName)
            continue
        }
        $account = [string]$service[0].StartName
        if ([string]::IsNullOrWhiteSpace($account) -or $granted.ContainsKey($account)) { continue }
        $identity = ConvertTo-ServiceIdentity -Account $account
        $acl = Get-Acl -LiteralPath $keyFile
        $read = [System.Security.AccessControl.FileSystemRights]::Read
        $allow = [System.Security.AccessControl.AccessControlType]::Allow
        $ruleType = 'System.Security.AccessControl.FileSystemAccessRule'
        $rule = New-Object -TypeName $ruleType -ArgumentList $identity, $read, $allow
        $acl.AddAccessRule($rule)
        Set-Acl -LiteralPath $keyFile -AclObject $acl
        $granted[$account] = $true
        Write-Certfleet ('{0} ({1}) may read the private key' -f $account, $serviceName)
    }
}

function Get-ExitCodeMeaning {
    param([int]$Code)
    $meaning = $ExitCodeMeanings[$Code]
    if ($null -eq $meaning) { return 'unexpected exit code' }
    return $meaning
}

function Invoke-ServerConfigurator {
    param([string[]]$Arguments)
    $stdout = [System.IO.Path]::GetTempFileName()
    $stderr = [System.IO.Path]::GetTempFileName()
    try {
        $console = @{
            NoNewWindow = $true
            RedirectStandardOutput = $stdout
            RedirectStandardError = $stderr
        }
        $exe = $ServerConfigurator
        $process = Start-Process -FilePath $exe -ArgumentList $Arguments -Wait -PassThru @console
        if ($null -eq $process.ExitCode) { throw 'ServerConfigurator.exe gave no exit code' }
        $output = @(Get-Content -LiteralPath $stdout) + @(Get-Content -LiteralPath $stderr)
        return [pscustomobject]@{ ExitCode = [int]$process.ExitCode; Output = ($output -join "`n") }
    } finally {
        Remove-Item -LiteralPath $stdout, $stderr -Force -ErrorAction SilentlyContinue
    }
}

function Get-GuidsNear {
    # The GUID on each line matching $Pattern, or else the first one further down its block
    # (up to a blank line). Distinct, lower-case.
    param([string[]]$Lines, [string]$Pattern)
    $guid = '[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}'
    $found = New-Object System.Collections.Generic.List[string]
    for ($i = 0; $i -lt $Lines.Count; $i++) {
        if (-not [regex]::IsMatch($Lines[$i], $Pattern)) { continue }
        for ($j = $i; $j -lt $Lines.Count; $j++) {
            if ($j -gt $i -and [string]::IsNullOrWhiteSpace($Lines[$j])) { break }
            $hit = [regex]::Match($Lines[$j], $guid)
            if ($hit.Success) {
                $value = $hit.Value.ToLowerInvariant()
                if (-not $found.Contains($value)) { $found.Add($value) }
                break
            }
        }
    }
    return $found.ToArray()
}

function Find-CertificateGroupId {
    # Expected listing line: Found 'Server' group with ID = <GUID>. First the name in quotes,
    # then the well-known ID if the listing shows it, then the name as a whole word.
    param([string]$Listing, [string]$Name, [string]$KnownId)
    $lines = @($Listing -split '\r?\n')
    $escaped = [regex]::Escape($Name)
    $quoted = @(Get-GuidsNear -Lines $lines -Pattern ('(?i)[''"]' + $escaped + '[''"]'))
    if ($quoted.Count -eq 1) { return $quoted[0] }
    if ($KnownId -and $Listing.ToLowerInvariant().Contains($KnownId.ToLowerInvariant())) {
        return $KnownId
    }
    $word = '(?<![A-Za-z0-9])' + $escaped + '(?![A-Za-z0-9])'
    $named = @(Get-GuidsNear -Lines $lines -Pattern $word)
    if ($named.Count -eq 1) { return $named[0] }
    $problem = 'certificate group {0} not found (or ambiguous) in the output of ' +
        'ServerConfigurator.exe /listcertificategroups: {1}'
    throw ($problem -f $Name, $Listing)
}

function Resolve-CertificateGroupIds {
    if (-not (Test-Path -LiteralPath $ServerConfigurator -PathType Leaf)) {
        throw ('no Server Configurator at {0} (XProtect 2020 R3 or later needed)' -f
            $ServerConfigurator)
    }
    $listing = Invoke-ServerConfigurator -Arguments @('/listcertificategroups')
    if ($listing.ExitCode -ne 0) {
        throw ('ServerConfigurator.exe /listcertificategroups exited {0} ({1})' -f
            $listing.ExitCode, (Get-ExitCodeMeaning -Code $listing.ExitCode))
    }
    $ids = @{}
    foreach ($group in $CertificateGroups) {
        $known = [string]$KnownGroupIds[$group]
        $ids[$group] = Find-CertificateGroupId -Listing $listing.Output -Name $group -KnownId $known
    }
    return $ids
}

function Set-CertificateGroupBinding {
    # Binding restarts the Milestone services; -4 means another instance runs: wait, retry.
    param([string]$Group, [string]$BindThumbprint)
    $groupId = $State.GroupIds[$Group]
    if (-not $groupId) { throw ('no ID resolved for certificate group {0}' -f $Group) }
    $arguments = @(
        '/quiet', '/enableencryption', ('/certificategroup=' + $groupId),
        ('/thumbprint=' + $BindThumbprint)
    )
    for ($attempt = 0; $attempt -le $BindRetries; $attempt++) {
        $run = Invoke-ServerConfigurator -Arguments $arguments
        if ($run.ExitCode -eq 0) {
            Write-Certfleet ('bound {0} ({1}) to {2}' -f $Group, $groupId, $BindThumbprint)
            return
        }
        if ($run.ExitCode -eq -4 -and $attempt -lt $BindRetries) {
            Write-Certfleet ('another Server Configurator is running; retry in {0}s' -f
                $BindRetryDelaySeconds)
            Start-Sleep -Seconds $BindRetryDelaySeconds
            continue
        }
        throw ('binding {0} to {1}: ServerConfigurator.exe exited {2} ({3}) {4}' -f $Group,
            $BindThumbprint, $run.ExitCode, (Get-ExitCodeMeaning -Code $run.ExitCode), $run.Output)
    }
}

function Get-PresentedThumbprint {
    # The thumbprint of the certificate the endpoint presents; any certificate is accepted,
    # as only its identity matters here.
    param([string]$HostName, [int]$Port)
    $captured = @{ Thumbprint = $null }
    $callback = {
        param($source, $certificate, $chain, $policyErrors)
        if ($null -ne $certificate) { $captured.Thumbprint = $certificate.GetCertHashString() }
        return $true
    }.GetNewClosure()
    $validate = [System.Net.Security.RemoteCertificateValidationCallback]$callback
    $client = New-Object System.Net.Sockets.TcpClient
    $tls = $null
    try {
        $pending = $client.BeginConnect($HostName, $Port, $null, $null)
        if (-not $pending.AsyncWaitHandle.WaitOne($ProbeTimeoutMilliseconds)) {
            throw ('no TCP connection to {0}:{1}' -f $HostName, $Port)
        }
        $client.EndConnect($pending)
        $network = $client.GetStream()
        $tls = New-Object System.Net.Security.SslStream -ArgumentList $network, $false, $validate
        $tls.ReadTimeout = $ProbeTimeoutMilliseconds
        $tls.WriteTimeout = $ProbeTimeoutMilliseconds
        $tls.AuthenticateAsClient($HostName)
    } finally {
        if ($null -ne $tls) { $tls.Dispose() }
        $client.Close()
    }
    if (-not $captured.Thumbprint) {
        throw ('{0}:{1} presented no certificate' -f $HostName, $Port)
    }
    return [string]$captured.Thumbprint
}

function Assert-EndpointsServeNewCertificate {
    if ($ProbeEndpoints.Count -eq 0) {
        Write-Certfleet 'WARNING: no endpoint to probe; the binding is not verified'
    }
    foreach ($endpoint in $ProbeEndpoints) {
        $where = '{0}:{1}' -f $endpoint.HostName, $endpoint.Port
        $matched = $false
        for ($attempt = 1; $attempt -le $ProbeAttempts -and -not $matched; $attempt++) {
            try {
                $hostName = $endpoint.HostName
                $presented = Get-PresentedThumbprint -HostName $hostName -Port $endpoint.Port
                $matched = $presented -eq $Thumbprint
                if (-not $matched) { Write-Certfleet ('{0} presents {1}' -f $where, $presented) }
            } catch {
                $problem = $_.Exception.Message
                Write-Certfleet ('probe {0}, attempt {1}: {2}' -f $where, $attempt, $problem)
            }
            if (-not $matched -and $attempt -lt $ProbeAttempts) {
                Start-Sleep -Seconds $ProbeDelaySeconds
            }
        }
        if (-not $matched) { throw ('{0} does not present the new certificate' -f $where) }
        Write-Certfleet ('{0} presents the new certificate' -f $where)
    }
}

function Remove-OldCertificate {
    if (-not $OldThumbprint) { return }
    $path = $MyStore + '\' + $OldThumbprint
    if (-not (Test-Path -LiteralPath $path)) {
        Write-Certfleet ('the old certificate {0} is already gone' -f $OldThumbprint)
        return
    }
    try {
        Remove-Item -LiteralPath $path -DeleteKey
        Write-Certfleet ('removed the old certificate {0}' -f $OldThumbprint)
    } catch {
        Write-Certfleet ('WARNING: could not remove the old certificate {0}: {1}' -f
            $OldThumbprint, $_.Exception.Message)
    }
}

function Undo-Binding {
    # Rebind every group to the old certificate, which stays in the store.
    if (-not $OldThumbprint) {
        Write-Certfleet 'no previous certificate to roll back to'
        return
    }
    try {
        if (-not (Test-Path -LiteralPath ($MyStore + '\' + $OldThumbprint))) {
            throw ('the old certificate {0} is not in {1}' -f $OldThumbprint, $MyStore)
        }
        foreach ($group in $CertificateGroups) {
            Set-CertificateGroupBinding -Group $group -BindThumbprint $OldThumbprint
        }
        $Outcome.Status = 'rolled_back'
        $Outcome.ExitCode = 2
        $Outcome.Restored = $OldThumbprint
        $Outcome.Message = 'rolled back to the old certificate: ' + $Outcome.Message
        Write-Certfleet ('rolled back every group to {0}' -f $OldThumbprint)
    } catch {
        $Outcome.Message = $Outcome.Message + '; rollback failed: ' + $_.Exception.Message
        Write-Certfleet ('ROLLBACK FAILED: ' + $_.Exception.Message)
    }
}
"""

_NOT_ELEVATED = r"""
if (-not (Test-Administrator)) {
    $Outcome.ExitCode = 3
    $Outcome.Message = 'not elevated: run this script from PowerShell started as administrator'
    Write-Certfleet $Outcome.Message
} else {"""

_FINISH = r"""
if ($PasswordPath) {
    Remove-Item -LiteralPath (Resolve-PlanPath -Path $PasswordPath) -Force -ErrorAction Ignore
}
Write-Result
exit $Outcome.ExitCode
"""

_INSTALL_MAIN = (
    _NOT_ELEVATED
    + r"""
    try {
        $PfxPath = Resolve-PlanPath -Path $PfxPath
        $PasswordPath = Resolve-PlanPath -Path $PasswordPath
        $CaCertificatePaths = @($CaCertificatePaths | ForEach-Object { Resolve-PlanPath -Path $_ })
        Write-Certfleet ('installing {0} for {1}' -f $Thumbprint, ($CertificateGroups -join ', '))
        Import-ServerCertificate
        Import-TrustedCertificates
        Grant-PrivateKeyAccess
        $State.GroupIds = Resolve-CertificateGroupIds
        $State.BindingStarted = $true
@@BINDINGS@@
        Assert-EndpointsServeNewCertificate
        Remove-OldCertificate
        $Outcome.Status = 'installed'
        $Outcome.ExitCode = 0
        $Outcome.Message = 'installed and bound'
    } catch {
        $Outcome.Message = $_.Exception.Message
        Write-Certfleet ('FAILED: ' + $Outcome.Message)
        if ($State.BindingStarted) { Undo-Binding }
    }
}"""
    + _FINISH
)

_TRUST_MAIN = (
    _NOT_ELEVATED
    + r"""
    try {
        $CaCertificatePaths = @($CaCertificatePaths | ForEach-Object { Resolve-PlanPath -Path $_ })
        Import-TrustedCertificates
        $Outcome.Status = 'installed'
        $Outcome.ExitCode = 0
        $Outcome.Message = ('trusted {0} CA certificate file(s)' -f $CaCertificatePaths.Count)
    } catch {
        $Outcome.Message = $_.Exception.Message
        Write-Certfleet ('FAILED: ' + $Outcome.Message)
    }
}"""
    + _FINISH
)
