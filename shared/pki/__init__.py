"""PKI: CA creation, CSR validation, server certificate signing and export."""
