
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
}