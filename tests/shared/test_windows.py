"""The generated PowerShell, tested as text and structure (no Windows here).

A small tokenizer stands in for PowerShell's parser: it skips single-quoted literals (and
decodes them), double-quoted strings and comments, so braces, variables and commands can be
checked in the code alone. If `pwsh` is on PATH, its real parser checks the scripts too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from shared.windows import (
    EXIT_FAILED,
    EXIT_INSTALLED,
    EXIT_NOT_ELEVATED,
    EXIT_ROLLED_BACK,
    LINUX_TRUST_FILE,
    RESULT_PREFIX,
    XPROTECT_GROUP_IDS,
    XPROTECT_GROUPS_BY_ROLE,
    XPROTECT_SERVICES,
    InstallPlan,
    certificate_groups,
    linux_trust_one_liner,
    normalize_thumbprint,
    powershell_quote,
    render_install_script,
    render_trust_script,
    trust_one_liner,
)

NEW = "A1" * 20
OLD = "B2" * 20
SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"
CMDLETS = {
    "ConvertTo-Json",
    "ConvertTo-SecureString",
    "ForEach-Object",
    "Get-Acl",
    "Get-CimInstance",
    "Get-Content",
    "Get-Item",
    "Get-Location",
    "Import-Certificate",
    "Import-PfxCertificate",
    "Join-Path",
    "New-Object",
    "Remove-Item",
    "Set-Acl",
    "Set-StrictMode",
    "Start-Process",
    "Start-Sleep",
    "Test-Path",
    "Where-Object",
    "Write-Output",
}
AUTOMATIC_VARIABLES = {"null", "true", "false", "_", "psscriptroot", "erroractionpreference"}


def plan(**changes: object) -> InstallPlan:
    values: dict[str, object] = {
        "pfx_path": r"C:\ProgramData\certfleet\certfleet.pfx",
        "pfx_password_path": r"C:\ProgramData\certfleet\certfleet.pfx.password",
        "thumbprint": NEW,
        "old_thumbprint": OLD,
        "ca_certificate_paths": (r"C:\ProgramData\certfleet\ca-0.cer",),
        "roles": ("recording",),
        "probe_endpoints": (("rec01.site1.example.com", 7563),),
    }
    values.update(changes)
    return InstallPlan(**values)  # type: ignore[arg-type]


def tokenize(script: str) -> tuple[str, list[str]]:
    """The code with single-quoted literals blanked to '' and comments dropped (double-quoted
    strings kept, as PowerShell expands variables in them), and the decoded literals."""
    code: list[str] = []
    literals: list[str] = []
    i = 0
    while i < len(script):
        char = script[i]
        if char in SINGLE_QUOTES:
            value: list[str] = []
            j = i + 1
            while True:
                assert j < len(script), "unterminated single-quoted string"
                if script[j] in SINGLE_QUOTES:
                    if j + 1 < len(script) and script[j + 1] in SINGLE_QUOTES:
                        value.append(script[j])
                        j += 2
                        continue
                    break
                value.append(script[j])
                j += 1
            literals.append("".join(value))
            code.append("''")
            i = j + 1
        elif char == '"':
            j = i + 1
            while script[j] != '"' or script[j + 1 : j + 2] == '"':
                j += 2 if script[j] in '`"' else 1
                assert j < len(script), "unterminated double-quoted string"
            code.append(script[i : j + 1])
            i = j + 1
        elif char == "#":
            end = script.find("\n", i)
            i = len(script) if end == -1 else end
        else:
            code.append(char)
            i += 1
    return "".join(code), literals


def assert_balanced(code: str) -> None:
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for char in code:
        if char in "([{":
            stack.append(char)
        elif char in pairs:
            assert stack and stack[-1] == pairs[char], f"unbalanced {char!r}"
            stack.pop()
    assert not stack, f"unclosed {stack}"


def defined_variables(code: str) -> set[str]:
    names = set(re.findall(r"\$(\w+)\s*\+?=(?!=)", code))
    names |= set(re.findall(r"foreach\s*\(\s*\$(\w+)\s+in\b", code, re.IGNORECASE))
    for start in (m.end() for m in re.finditer(r"\bparam\(", code)):
        depth, end = 1, start
        while depth:
            depth += {"(": 1, ")": -1}.get(code[end], 0)
            end += 1
        names |= set(re.findall(r"\$(\w+)", code[start:end]))
    return {name.lower() for name in names} | AUTOMATIC_VARIABLES


def function_body(script: str, name: str) -> str:
    start = script.index(f"function {name} {{")
    end = script.index("\n}\n", start)
    return script[start:end]


def all_scripts() -> list[str]:
    return [
        render_install_script(plan()),
        render_install_script(plan(roles=("management", "mobile", "event"), old_thumbprint=None)),
        render_install_script(plan(probe_endpoints=(), ca_certificate_paths=())),
        render_install_script(plan(roles=("client",))),
        render_trust_script([r"C:\ca\root.cer", r"C:\ca\new-root.cer"]),
    ]


# --- certificate groups ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("roles", "expected"),
    [
        (["management"], ("Server",)),
        (["recording"], ("Server", "StreamingMedia")),
        (["failover"], ("Server", "StreamingMedia")),
        (["mobile"], ("MobileServer",)),
        (["event"], ("EventServer",)),
        (["client"], ()),
        (["other", "client"], ()),
        ([], ()),
    ],
)
def test_groups_per_role(roles: list[str], expected: tuple[str, ...]) -> None:
    assert certificate_groups(roles) == expected


def test_mixed_roles_are_deduplicated_in_a_stable_order() -> None:
    mixed = ["mobile", "recording", "management", "failover", "client", "recording"]
    assert certificate_groups(mixed) == ("Server", "StreamingMedia", "MobileServer")
    assert certificate_groups(reversed(mixed)) == certificate_groups(mixed)


def test_unknown_roles_and_bare_strings_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown host role"):
        certificate_groups(["recorder"])
    with pytest.raises(TypeError):
        certificate_groups("recording")
    with pytest.raises(ValueError, match="unknown host role"):
        plan(roles=("recording", "nvr"))


def test_every_host_role_and_group_is_mapped() -> None:
    from shared.db.models import HOST_ROLES

    assert set(XPROTECT_GROUPS_BY_ROLE) == set(HOST_ROLES)
    groups = {g for gs in XPROTECT_GROUPS_BY_ROLE.values() for g in gs}
    assert groups == set(XPROTECT_GROUP_IDS)
    for guid in XPROTECT_GROUP_IDS.values():
        assert re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", guid)


# --- binding -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "roles",
    [("recording",), ("management", "mobile"), ("event", "failover", "client"), ("mobile",)],
)
def test_one_bind_per_group_of_the_roles(roles: tuple[str, ...]) -> None:
    script = render_install_script(plan(roles=roles))
    groups = certificate_groups(roles)
    for group in XPROTECT_GROUP_IDS:
        binds = script.count(
            f"Set-CertificateGroupBinding -Group '{group}' -BindThumbprint $Thumbprint"
        )
        assert binds == (1 if group in groups else 0), group
    # One place calls ServerConfigurator.exe, and one builds the /enableencryption call.
    assert script.count("Start-Process") == 1
    assert script.count("'/enableencryption'") == 1
    assert "'/quiet', '/enableencryption', ('/certificategroup=' + $groupId)" in script
    assert "('/thumbprint=' + $BindThumbprint)" in script


def test_group_ids_are_resolved_from_the_listing_at_run_time() -> None:
    script = render_install_script(plan())
    assert "Invoke-ServerConfigurator -Arguments @('/listcertificategroups')" in script
    assert "Found 'Server' group with ID = <GUID>" in script  # the documented line shape
    assert "$State.GroupIds = Resolve-CertificateGroupIds" in script
    body = function_body(script, "Find-CertificateGroupId")
    assert "throw" in body
    # Only the plan's groups carry a fallback ID.
    assert XPROTECT_GROUP_IDS["StreamingMedia"] in script
    assert XPROTECT_GROUP_IDS["MobileServer"] not in script


def test_client_only_hosts_get_trust_and_no_binding() -> None:
    script = render_install_script(plan(roles=("client",)))
    assert "ServerConfigurator" not in script
    assert "/enableencryption" not in script
    assert "Import-PfxCertificate" not in script
    assert "Import-Certificate -FilePath $path -CertStoreLocation $RootStore" in script
    assert "$RootStore = 'Cert:\\LocalMachine\\Root'" in script
    # The password file a file-based target dropped is still removed.
    assert "$PasswordPath = 'C:\\ProgramData\\certfleet\\certfleet.pfx.password'" in script
    assert "Remove-Item -LiteralPath (Resolve-PlanPath -Path $PasswordPath)" in script


def test_exit_code_minus_four_is_retried_and_every_code_is_named() -> None:
    script = render_install_script(plan(bind_retries=7, bind_retry_delay_seconds=45))
    assert "$BindRetries = 7" in script
    assert "$BindRetryDelaySeconds = 45" in script
    body = function_body(script, "Set-CertificateGroupBinding")
    assert "for ($attempt = 0; $attempt -le $BindRetries; $attempt++)" in body
    assert "if ($run.ExitCode -eq -4 -and $attempt -lt $BindRetries)" in body
    assert "Start-Sleep -Seconds $BindRetryDelaySeconds" in body
    assert "if ($run.ExitCode -eq 0)" in body
    for code, meaning in [
        (-1, "unknown error"),
        (-2, "invalid arguments"),
        (-3, "invalid argument value"),
        (-4, "another instance is running"),
    ]:
        assert f"    {code} = '{meaning}'" in script
    assert "$process = Start-Process -FilePath $exe -ArgumentList $Arguments -Wait -PassThru" in (
        script
    )
    assert render_install_script(plan()).count("$BindRetries = 5") == 1


# --- thumbprints, rollback, old certificate --------------------------------------------------


def test_thumbprints_and_rollback_path_appear() -> None:
    script = render_install_script(plan())
    assert f"$Thumbprint = '{NEW}'" in script
    assert f"$OldThumbprint = '{OLD}'" in script
    rollback = function_body(script, "Undo-Binding")
    assert "Set-CertificateGroupBinding -Group $group -BindThumbprint $OldThumbprint" in rollback
    assert f"$Outcome.ExitCode = {EXIT_ROLLED_BACK}" in rollback
    assert "$Outcome.Status = 'rolled_back'" in rollback
    assert "if ($State.BindingStarted) { Undo-Binding }" in script
    # The old certificate is removed only after the probes pass, and never by the rollback.
    order = [
        "$State.BindingStarted = $true",
        "Set-CertificateGroupBinding -Group 'Server'",
        "Assert-EndpointsServeNewCertificate\n",
        "Remove-OldCertificate\n",
        f"$Outcome.ExitCode = {EXIT_INSTALLED}",
        "} catch {",
    ]
    main = script[script.index("if (-not (Test-Administrator))") :]
    positions = [main.index(marker) for marker in order]
    assert positions == sorted(positions)
    assert "Remove-Item" not in rollback
    assert "Remove-Item -LiteralPath $path -DeleteKey" in function_body(
        script, "Remove-OldCertificate"
    )


def test_without_an_old_certificate_there_is_nothing_to_roll_back_to_or_remove() -> None:
    for old in (None, "", NEW, NEW.lower()):
        script = render_install_script(plan(old_thumbprint=old))
        assert "$OldThumbprint = $null" in script
        assert "if (-not $OldThumbprint)" in function_body(script, "Undo-Binding")
        assert "if (-not $OldThumbprint) { return }" in function_body(
            script, "Remove-OldCertificate"
        )


@pytest.mark.parametrize(
    "bad",
    ["A1" * 19, "A1" * 21, "G" * 40, ":".join(["A1"] * 20), " " + "A1" * 20, "", "0x" + "A" * 38],
)
def test_thumbprints_must_be_forty_hex_characters(bad: str) -> None:
    with pytest.raises(ValueError, match="40 hexadecimal"):
        normalize_thumbprint(bad)
    with pytest.raises(ValueError, match="40 hexadecimal"):
        plan(thumbprint=bad)
    if bad:
        with pytest.raises(ValueError, match="40 hexadecimal"):
            plan(old_thumbprint=bad)


def test_thumbprints_are_upper_cased_as_windows_shows_them() -> None:
    installed = plan(thumbprint=NEW.lower(), old_thumbprint=OLD.lower())
    assert installed.thumbprint == NEW
    assert installed.old_thumbprint == OLD
    assert f"$Thumbprint = '{NEW}'" in render_install_script(installed)


# --- the PFX password ----------------------------------------------------------------------


def test_password_is_read_from_its_file_and_never_embedded(tmp_path: Path) -> None:
    password = "Fake-PFX-Passw0rd-7f3c9e"
    password_file = tmp_path / "certfleet.pfx.password"
    password_file.write_text(password)
    installed = plan(pfx_password_path=str(password_file))
    assert not any(
        "password" in f.name and "path" not in f.name for f in dataclasses.fields(plan())
    )
    script = render_install_script(installed)
    assert password not in script
    body = function_body(script, "Import-ServerCertificate")
    assert "$raw = Get-Content -LiteralPath $PasswordPath -Raw" in body
    assert "ConvertTo-SecureString -String ($raw.Trim()) -AsPlainText -Force" in body
    assert "Password = $password }" in body
    cleanup = body[body.index("} finally {") :]
    assert "Remove-Item -LiteralPath $PasswordPath -Force" in cleanup.split("\n    }\n")[0]
    assert "Where-Object { $_.Thumbprint -eq $Thumbprint }" in body
    assert password_file.read_text() == password  # rendering reads nothing


# --- quoting -------------------------------------------------------------------------------


def test_single_quotes_are_doubled() -> None:
    assert powershell_quote("C:\\O'Brien\\a.pfx") == "'C:\\O''Brien\\a.pfx'"
    assert powershell_quote("it\u2019s") == "'it\u2019\u2019s'"
    assert powershell_quote('say "hi" $env:X `n') == "'say \"hi\" $env:X `n'"


@pytest.mark.parametrize(
    "hostile",
    [
        "C:\\O'Brien\\certfleet.pfx",
        "C:\\x'; Remove-Item C:\\ -Recurse; '.pfx",
        "C:\\x\u2019; Remove-Item C:\\ -Recurse; \u2018.pfx",
        "C:\\$(Remove-Item C:\\)\\a.pfx",
    ],
)
def test_plan_values_stay_inside_their_literals(hostile: str) -> None:
    script = render_install_script(
        plan(
            pfx_path=hostile,
            ca_certificate_paths=(hostile,),
            service_names=(hostile, "Milestone XProtect Recording Server"),
        )
    )
    code, literals = tokenize(script)
    assert literals.count(hostile) == 3
    assert "Remove-Item C:" not in code


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\x00b", "a\u2028b", ""])
def test_line_breaks_nul_and_empty_values_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        powershell_quote(bad)
    for field in ("pfx_path", "pfx_password_path", "server_configurator_path"):
        with pytest.raises(ValueError):
            plan(**{field: bad})
    with pytest.raises(ValueError):
        plan(ca_certificate_paths=("C:\\ok.cer", bad))
    with pytest.raises(ValueError):
        plan(service_names=(bad,))
    with pytest.raises(ValueError):
        plan(probe_endpoints=((bad, 443),))
    with pytest.raises(ValueError):
        render_trust_script([bad])


@pytest.mark.parametrize("port", [0, 65536, -1, True, "443"])
def test_probe_ports_are_checked(port: object) -> None:
    with pytest.raises(ValueError, match="port"):
        plan(probe_endpoints=(("rec01", port),))


def test_retry_counts_are_checked() -> None:
    for changes in ({"bind_retries": -1}, {"probe_attempts": 0}, {"probe_timeout_seconds": 0}):
        with pytest.raises(ValueError):
            plan(**changes)


# --- what the script does on the host ------------------------------------------------------


def test_strict_mode_and_elevation_come_first() -> None:
    script = render_install_script(plan())
    code, _ = tokenize(script)
    statements = [line.strip() for line in code.splitlines() if line.strip()]
    assert statements[:2] == ["Set-StrictMode -Version Latest", "$ErrorActionPreference = ''"]
    assert "$ErrorActionPreference = 'Stop'" in script
    assert "[System.Security.Principal.WindowsPrincipal]$identity" in script
    assert "IsInRole([System.Security.Principal.WindowsBuiltInRole]::Administrator)" in script
    main = script[script.index("if (-not (Test-Administrator))") :]
    assert main.index(f"$Outcome.ExitCode = {EXIT_NOT_ELEVATED}") < main.index("try {")
    assert f"$Outcome = @{{ Status = 'failed'; ExitCode = {EXIT_FAILED};" in script


def test_service_accounts_get_read_access_to_the_key() -> None:
    script = render_install_script(plan())
    for service in XPROTECT_SERVICES:
        assert f"    '{service}'" in script
    grant = function_body(script, "Grant-PrivateKeyAccess")
    assert "Get-CimInstance -ClassName Win32_Service" in grant
    assert "[string]$service[0].StartName" in grant
    assert "if ($service.Count -eq 0)" in grant and "continue" in grant  # missing: skipped
    assert "[System.Security.AccessControl.FileSystemRights]::Read" in grant
    assert "Get-Acl -LiteralPath $keyFile" in grant
    assert "Set-Acl -LiteralPath $keyFile -AclObject $acl" in grant
    key = function_body(script, "Get-PrivateKeyFile")
    assert "$RsaExtensions::GetRSAPrivateKey($Certificate)" in key
    assert "RSACertificateExtensions]" in script
    assert "$key -is [System.Security.Cryptography.RSACng]" in key
    assert "$name = $key.Key.UniqueName" in key
    assert "$name = $key.CspKeyContainerInfo.UniqueKeyContainerName" in key
    assert "'Microsoft\\Crypto\\Keys'" in key and "'Microsoft\\Crypto\\RSA\\MachineKeys'" in key
    assert "$env:ProgramData" in key
    custom = render_install_script(plan(service_names=("VideoOS Custom Service",)))
    assert "'VideoOS Custom Service'" in custom
    assert "Milestone XProtect Event Server" not in custom


def test_endpoints_are_probed_for_the_new_thumbprint() -> None:
    script = render_install_script(
        plan(
            probe_endpoints=(("rec01.example.com", 7563), ("10.0.0.5", 443)),
            probe_attempts=4,
            probe_timeout_seconds=7,
        )
    )
    assert "@{ HostName = 'rec01.example.com'; Port = 7563 }," in script
    assert "@{ HostName = '10.0.0.5'; Port = 443 }" in script
    assert "$ProbeAttempts = 4" in script
    assert "$ProbeTimeoutMilliseconds = 7000" in script
    probe = function_body(script, "Get-PresentedThumbprint")
    assert "New-Object System.Net.Sockets.TcpClient" in probe
    assert "System.Net.Security.SslStream" in probe
    assert "[System.Net.Security.RemoteCertificateValidationCallback]$callback" in probe
    assert "$certificate.GetCertHashString()" in probe
    check = function_body(script, "Assert-EndpointsServeNewCertificate")
    assert "$matched = $presented -eq $Thumbprint" in check
    assert "Start-Sleep -Seconds $ProbeDelaySeconds" in check
    assert "throw" in check


def test_ca_certificates_go_to_the_machine_root_store() -> None:
    paths = (r"C:\certfleet\ca-0.cer", r"C:\certfleet\ca-1.cer")
    script = render_install_script(plan(ca_certificate_paths=paths))
    assert "$CaCertificatePaths = @(\n    'C:\\certfleet\\ca-0.cer',\n" in script
    assert "Import-Certificate -FilePath $path -CertStoreLocation $RootStore" in script
    assert "$MyStore = 'Cert:\\LocalMachine\\My'" in script
    assert "-CertStoreLocation = $MyStore" not in script
    assert "CertStoreLocation = $MyStore" in function_body(script, "Import-ServerCertificate")


# --- structure -----------------------------------------------------------------------------


@pytest.mark.parametrize("index", range(5))
def test_scripts_are_balanced_and_end_with_the_result_line(index: int) -> None:
    script = all_scripts()[index]
    code, _ = tokenize(script)
    assert_balanced(code)
    lines = [line for line in script.splitlines() if line.strip()]
    assert lines[-2:] == ["Write-Result", "exit $Outcome.ExitCode"]
    result = function_body(script, "Write-Result")
    assert f"Write-Output ('{RESULT_PREFIX} ' + (ConvertTo-Json -InputObject $record" in result
    assert "-Compress" in result
    assert "status = $Outcome.Status" in result and "thumbprint = $Thumbprint" in result


@pytest.mark.parametrize("index", range(5))
def test_every_variable_is_assigned_before_strict_mode_sees_it(index: int) -> None:
    code, _ = tokenize(all_scripts()[index])
    used = {
        m.group(1).lower() for m in re.finditer(r"\$(\w+)\b(?!:\w)", code) if m.group(1) != "env"
    }
    assert used - defined_variables(code) == set()


@pytest.mark.parametrize("index", range(5))
def test_every_command_is_known_and_every_function_used(index: int) -> None:
    code, _ = tokenize(all_scripts()[index])
    defined = set(re.findall(r"\bfunction ([A-Za-z]+-[A-Za-z]+)", code))
    called = set(re.findall(r"(?<![\w$.-])([A-Z][A-Za-z]+-[A-Z][A-Za-z]+)\b", code))
    assert called - defined - CMDLETS == set()
    for name in defined:
        assert len(re.findall(rf"\b{name}\b", code)) >= 2, f"{name} is never called"


def test_exit_codes_match_the_documented_constants() -> None:
    script = render_install_script(plan())
    for code in (EXIT_INSTALLED, EXIT_FAILED, EXIT_ROLLED_BACK, EXIT_NOT_ELEVATED):
        assert f"ExitCode = {code}" in script
    assert "# Exit codes: 0 installed, 1 failed, 2 rolled back, 3 not elevated." in script


def test_the_agent_reads_the_same_result_prefix() -> None:
    from services.agent.installers import RESULT_PREFIX as AGENT_PREFIX
    from services.agent.installers import parse_result

    assert AGENT_PREFIX == RESULT_PREFIX
    line = RESULT_PREFIX + ' {"status":"rolled_back","thumbprint":"' + NEW + '"}'
    assert parse_result("certfleet: bound\n" + line + "\n") == {
        "status": "rolled_back",
        "thumbprint": NEW,
    }


@pytest.mark.skipif(shutil.which("pwsh") is None, reason="pwsh is not installed")
@pytest.mark.parametrize("index", range(5))
def test_powershell_parses_the_scripts(index: int, tmp_path: Path) -> None:
    path = tmp_path / "script.ps1"
    path.write_text(all_scripts()[index], encoding="utf-8-sig")
    command = (
        "$t = $null; $e = $null; "
        "$null = [System.Management.Automation.Language.Parser]::ParseInput("
        f"(Get-Content -Raw -LiteralPath {powershell_quote(str(path))}), [ref]$t, [ref]$e); "
        "$e | ForEach-Object { $_.Message }; exit $e.Count"
    )
    result = subprocess.run(
        ["pwsh", "-NoProfile", "-NonInteractive", "-Command", command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- trust for clients ---------------------------------------------------------------------


def test_trust_script_imports_only_ca_certificates() -> None:
    script = render_trust_script([r"C:\ca\root.cer", "C:\\ca\\it's.cer"])
    assert "'C:\\ca\\it''s.cer'" in script
    assert "Import-Certificate -FilePath $path -CertStoreLocation $RootStore" in script
    assert "Import-PfxCertificate" not in script and "ServerConfigurator" not in script
    assert "$Thumbprint = ''" in script
    assert "$PasswordPath = $null" in script
    with pytest.raises(ValueError):
        render_trust_script([])
    with pytest.raises(ValueError):
        render_trust_script("C:\\ca\\root.cer")  # a string is not a list of paths


SUM = hashlib.sha256(b"a bundle").hexdigest()


def test_windows_trust_one_liner() -> None:
    url = "https://certfleet.example.com/api/v1/trust-bundle?site=o'brien"
    line = trust_one_liner(url, SUM)
    assert "\n" not in line
    code, literals = tokenize(line)
    assert_balanced(code)
    assert url in literals
    assert "Invoke-WebRequest -UseBasicParsing -Uri ''" in code
    assert "Import-Certificate -FilePath $file -CertStoreLocation ''" in code
    assert "Cert:\\LocalMachine\\Root" in literals
    assert "Tls12" in code
    # The fingerprint is checked before anything is imported.
    assert SUM in literals
    assert "ComputeHash($bytes)" in code and "if ($sum -ne '')" in code
    assert code.index("if ($sum -ne '')") < code.index("Import-Certificate")


def test_linux_trust_one_liner() -> None:
    url = "https://certfleet.example.com/api/v1/trust-bundle?a=1&b=$(id)"
    line = linux_trust_one_liner(url, SUM)
    words = shlex.split(line)
    assert url in words and f"{SUM}  $f" in words
    assert f"{LINUX_TRUST_FILE};" in words
    assert LINUX_TRUST_FILE == "/usr/local/share/ca-certificates/certfleet.crt"
    assert words[-2:] == ["sudo", "update-ca-certificates)"]
    assert line.index("sha256sum -c") < line.index("sudo install")
    # tests/services/cli/test_trust_install.py runs it with bash, curl and sha256sum.


@pytest.mark.parametrize(
    "bad",
    [
        "ftp://x/bundle",
        "certfleet.example.com/bundle",
        "https://x/a b",
        "https://x/\nrm",
        "https://",
    ],
)
def test_one_liners_refuse_what_is_not_an_http_url(bad: str) -> None:
    with pytest.raises(ValueError):
        trust_one_liner(bad, SUM)
    with pytest.raises(ValueError):
        linux_trust_one_liner(bad, SUM)


@pytest.mark.parametrize("bad", ["", SUM.upper(), SUM[:-1], SUM + "0", "'; rm -rf / #" + SUM])
def test_one_liners_refuse_what_is_not_a_sha256(bad: str) -> None:
    url = "https://certfleet.example.com/api/v1/trust-bundle"
    with pytest.raises(ValueError):
        trust_one_liner(url, bad)
    with pytest.raises(ValueError):
        linux_trust_one_liner(url, bad)
