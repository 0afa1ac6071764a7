
if (-not (Test-Administrator)) {
    $Outcome.ExitCode = 3
    $Outcome.Message = 'not elevated: run this script from PowerShell started as administrator'
    Write-Certfleet $Outcome.Message
} else {