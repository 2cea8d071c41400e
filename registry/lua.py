"""The one Lua loader: scripts ship as `.lua` package data beside the Python that calls them."""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def source(package: str, name: str) -> str:
    """The text of `<package>/lua/<name>.lua` (read once per process).

    Each file opens with a comment naming its KEYS and ARGV; the Python wrapper that
    calls it sits in `package`, so the protocol's writer and reader stay side by side.
    """
    return files(package).joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")
