
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
