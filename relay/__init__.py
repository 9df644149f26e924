"""Postern's embedded SMTP relay daemon."""

VERSION = "0.1.0"
