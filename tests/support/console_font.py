"""The glyphs a Linux console font can draw, read from its PSF file (kbd's Unicode table)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

UNI2_FIXED16 = Path("/usr/share/consolefonts/Uni2-Fixed16.psf.gz")


def font_glyphs(path: Path = UNI2_FIXED16) -> set[str]:
    data = gzip.open(path).read()
    if data[:4] == b"\x72\xb5\x4a\x86":  # PSF2: glyphs, then a UTF-8 table ending each glyph with 0xFF
        header_size, flags, count, glyph_size = struct.unpack("<4I", data[8:24])
        table = data[header_size + count * glyph_size:]
        chars: set[str] = set()
        for entry in table.split(b"\xff")[:count]:
            chars.update(entry.split(b"\xfe")[0].decode("utf-8", "ignore"))
        return chars
    mode, glyph_size = data[2], data[3]  # PSF1: a UCS-2 table after 256 or 512 glyphs
    count = 512 if mode & 1 else 256
    table = data[4 + count * glyph_size:]
    values = struct.unpack(f"<{len(table) // 2}H", table[: len(table) // 2 * 2])
    return {chr(v) for v in values if v not in (0xFFFE, 0xFFFF)}


def unreadable(app) -> list[str]:
    """Text an app draws in the colour of its own background on the VM's console, where the default
    colours are white on black and, with a 512-glyph font such as Uni2-Fixed16, a bright background
    shows as its normal colour (the font takes that bit of the attribute)."""
    found = []
    for y, strip in enumerate(app.screen._compositor.render_strips()):
        for segment in strip:
            style = segment.style
            if not segment.text.strip() or style is None:
                continue
            color = style.bgcolor if style.reverse else style.color
            bgcolor = style.color if style.reverse else style.bgcolor
            foreground = 7 if color is None or color.is_default else color.number
            background = 0 if bgcolor is None or bgcolor.is_default else bgcolor.number
            if foreground is not None and background is not None and foreground == background % 8:
                found.append(f"line {y}: {segment.text.strip()!r}")
    return found
