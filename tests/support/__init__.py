"""Real test peers: the relay as a process, recording SMTP next hops, a DNS server on loopback."""
