"""The relay's local control API: Varlink over a Unix socket, and its clients."""
