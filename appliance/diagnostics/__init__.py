"""Diagnostics an admin runs from the console: DNS lookups, the HELO/PTR check, the next-hop check."""
