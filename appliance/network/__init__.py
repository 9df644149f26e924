"""Network, hostname and DNS: the desired state, its files, the live state and applying it."""
