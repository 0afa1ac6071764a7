
$MyStore = 'Cert:\LocalMachine\My'
$RootStore = 'Cert:\LocalMachine\Root'
$Outcome = @{ Status = 'failed'; ExitCode = 1; Message = ''; Restored = $null }
