"""Postern appliance system layer: network, hostname, DNS, config store, certificates."""
