
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
}