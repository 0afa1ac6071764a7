
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
