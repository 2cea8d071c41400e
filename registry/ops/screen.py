"""Drawing on a terminal for `jobreg top`: styled text segments, wrapping and clipping to the window, colour."""

from __future__ import annotations

import os
from typing import TextIO

Segment = tuple[str, str]  # (text, SGR parameters such as "1" or "32"; "" for none)
Line = list[Segment]

HIDE_CURSOR = "\x1b[?25l"
SHOW_CURSOR = "\x1b[?25h"
# What a terminal that does not report its size is taken to be (VT100's, as shutil does).
DEFAULT_SIZE = (80, 24)


def plain(text: str) -> Segment:
    return text, ""


def bold(text: str) -> Segment:
    return text, "1"


def dim(text: str) -> Segment:
    return text, "2"


def wrap(label: str, items: list[Segment], label_width: int, width: int | None, gap: int) -> list[Line]:
    """``label`` then ``items`` ``gap`` spaces apart; with a ``width``, items that do not fit go on
    continuation lines indented under the first item."""
    lines: list[Line] = []
    line: Line = [plain(f"{label:<{label_width}}")]
    used = max(len(label), label_width)
    first = True
    for text, style in items:
        sep = 0 if first else gap
        if width is not None and not first and used + sep + len(text) > width:
            lines.append(line)
            line, used, sep = [plain(" " * label_width)], label_width, 0
        if sep:
            line.append(plain(" " * sep))
        line.append((text, style))
        used += sep + len(text)
        first = False
    lines.append(line)
    return lines


def clip(line: Line, width: int) -> Line:
    """``line`` cut to ``width`` visible characters."""
    out: Line = []
    left = width
    for text, style in line:
        if left <= 0:
            break
        out.append((text[:left], style))
        left -= len(text)
    return out


class Screen:
    """How a line reads without a terminal."""

    @staticmethod
    def plain_text(line: Line) -> str:
        return "".join(text for text, _ in line).rstrip()


class Term:
    """An output that is a terminal: its size, whether to colour, and how to draw a frame on it."""

    def __init__(self, out: TextIO, colour: bool) -> None:
        self.out = out
        self.colour = colour

    @classmethod
    def of(cls, out: TextIO) -> Term | None:
        if not out.isatty():
            return None
        colour = not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
        return cls(out, colour)

    def size(self) -> tuple[int, int]:
        """(columns, rows); a terminal reporting none (a fresh pty says 0x0) is taken to be 80x24."""
        try:
            cols, rows = os.get_terminal_size(self.out.fileno())
        except OSError:
            return DEFAULT_SIZE
        return (cols, rows) if cols > 0 and rows > 0 else DEFAULT_SIZE

    def draw(self, lines: list[Line], width: int, height: int) -> str:
        """A frame's text: each line clipped to the width, as many lines as leave the cursor's row free
        (writing on the last row would scroll the screen)."""
        shown = [clip(line, width) for line in lines[: max(0, height - 1)]]
        render = self._styled if self.colour else Screen.plain_text
        return HIDE_CURSOR + "".join(render(line) + "\n" for line in shown)

    @staticmethod
    def _styled(line: Line) -> str:
        return "".join(f"\x1b[{style}m{text}\x1b[0m" if style and text else text for text, style in line)

    @staticmethod
    def restore() -> str:
        return SHOW_CURSOR
