
if ($PasswordPath) {
    Remove-Item -LiteralPath (Resolve-PlanPath -Path $PasswordPath) -Force -ErrorAction Ignore
}
Write-Result
exit $Outcome.ExitCode
