"""`postern-appliance`: the system layer on the command line (network, configuration, certificates, diagnostics)."""
