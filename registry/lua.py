"""The one Lua loader: scripts ship as `.lua` package data beside the Python that calls them.

Every script opens with a ``#!lua`` shebang (Redis 7), with flags where they apply:
``no-writes`` for a read-only script (it then runs on replicas and under OOM), ``allow-oom``
for one that only frees memory (trimming a stream must still run when Redis is full). With a
shebang, a cluster node checks each key a script touches against the slot of its declared KEYS
and refuses another slot even when that slot is on the same node, so a test on a local cluster
catches a cross-slot access wherever the slots landed; without one (the pre-7 dialect) it
would not (a standalone Redis checks no slots either way). The KEYS/ARGV header comment sits
right below the shebang.

Library fragments (helpers prepended to several scripts, e.g. registry/query/lua/lib.lua)
carry no shebang: Redis only ever reads the first line of the text it is given, which is the
script's own, so ``script`` puts that line first and the fragments after it.
"""

from __future__ import annotations

from functools import cache, wraps
from importlib.resources import files
from typing import Any

SHEBANG = "#!lua"


@cache
def source(package: str, name: str) -> str:
    """The text of `<package>/lua/<name>.lua` (read once per process).

    Each file opens with its shebang and a comment naming its KEYS and ARGV; the Python wrapper
    that calls it sits in `package`, so the protocol's writer and reader stay side by side.
    """
    return files(package).joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


def shebang(text: str) -> str:
    """The script's shebang line (``#!lua`` and its flags), without the newline."""
    first = text.split("\n", 1)[0]
    if first != SHEBANG and not first.startswith(SHEBANG + " "):
        raise ValueError(f"a jobreg script starts with {SHEBANG!r} (and its flags), not {first!r}")
    return first


def flags(text: str) -> frozenset[str]:
    """The flags of the script's shebang (``#!lua flags=no-writes,allow-oom`` -> both)."""
    options = shebang(text).split()[1:]
    return frozenset(f for opt in options if opt.startswith("flags=") for f in opt[6:].split(",") if f)


@cache
def script(package: str, name: str, libs: tuple[str, ...] = ()) -> str:
    """The text Redis runs: ``name``'s shebang line, the fragments ``libs`` in order, then the rest of ``name``.

    A fragment is named within ``package``, or as ``"<package>:<name>"`` when it lives in another
    one (the sort-index library, registry/store/lua/sortlib.lua, serves readers and writers).

    A fragment with a shebang is refused: a second ``#!`` line in the middle of a script is a
    Lua syntax error, and its flags would be silently ignored.
    """
    text = source(package, name)
    head = shebang(text)
    parts = [head + "\n"]
    for lib in libs:
        lib_package, _, lib_name = lib.rpartition(":")
        fragment = source(lib_package or package, lib_name)
        if fragment.startswith("#!"):
            raise ValueError(f"{package} lua/{lib}.lua is a fragment: its first line must not be a shebang")
        parts.append(fragment)
    parts.append(text[len(head) + 1 :])
    return "".join(parts)


def _strip_shebang(text: bytes) -> bytes:
    """``text`` with its shebang line's text removed (its newline kept, so error line numbers stay right)."""
    return text[text.index(b"\n") :] if text.startswith(b"#!") and b"\n" in text else text


def teach_fakeredis() -> None:
    """Let fakeredis (the embedded fallback when no redis-server exists) run shebang scripts.

    Its Lua runner reads the shebang as Lua and fails, so its EVAL (EVALSHA runs through it) drops
    that line first. Patched on the server's side, in-process, so every client, including worker
    and API subprocesses, sends the same text and SHA as to a real Redis. fakeredis neither checks
    slots nor honours flags, so nothing the shebang buys on a real Redis is lost. Idempotent.
    """
    from fakeredis.commands_mixins.scripting_mixin import ScriptingCommandsMixin

    run = ScriptingCommandsMixin.eval
    if getattr(run, "jobreg_strips_shebang", False):
        return

    @wraps(run)
    def eval_(self: Any, script: bytes, numkeys: int, *keys_and_args: bytes) -> Any:
        return run(self, _strip_shebang(script), numkeys, *keys_and_args)

    eval_.jobreg_strips_shebang = True  # type: ignore[attr-defined]
    ScriptingCommandsMixin.eval = eval_  # type: ignore[method-assign]
