"""Postern console (Textual)."""
