"""Every Lua script opens with a `#!lua` shebang whose flags fit what it does; fragments have none."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from registry import lua
from registry.query import scripts

ROOT = Path(__file__).resolve().parents[2]
QUERY_LUA = ROOT / "registry" / "query" / "lua"
STORE_LUA = ROOT / "registry" / "store" / "lua"
# Fragments outside the query path, and the store scripts composed with them (lua.script).
STORE_FRAGMENTS = {"sortlib"}
STORE_COMPOSED = {"sortidx": ("sortlib",)}
KNOWN_FLAGS = {"no-writes", "allow-oom"}
# Commands the scripts use that write (a `no-writes` script calling one fails at run time).
WRITES = {
    "BITFIELD", "BITOP", "DEL", "HDEL", "HSET", "INCRBY", "PEXPIRE", "SADD", "SET", "SETBIT",
    "SETRANGE", "SREM", "XACK", "XADD", "XGROUP", "XTRIM", "ZADD", "ZREM", "HINCRBY", "INCR", "ZREMRANGEBYRANK",
}  # fmt: skip


def lua_files() -> list[Path]:
    return sorted(p for top in ("registry", "workers") for p in (ROOT / top).rglob("*.lua"))


def is_fragment(path: Path) -> bool:
    """A query-path helper prepended to scripts (registry/query/scripts.py), not a script Redis runs alone."""
    if path.parent == STORE_LUA:
        return path.stem in STORE_FRAGMENTS
    return path.parent == QUERY_LUA and path.stem not in scripts._NAMES


def test_there_are_scripts_and_fragments() -> None:
    fragments = {p.stem for p in lua_files() if is_fragment(p) and p.parent == QUERY_LUA}
    assert {"lib", "checklib"} <= fragments
    assert len(lua_files()) - len(fragments) - len(STORE_FRAGMENTS) >= 15
    # Every fragment is prepended to some script, after that script's shebang.
    composed = [scripts.script_text(n) for n in scripts._NAMES]
    for name in fragments:
        body = lua.source("registry.query", name)
        assert any(body in text and text.startswith("#!lua") for text in composed), name


@pytest.mark.parametrize("path", lua_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_each_script_has_a_shebang_and_its_header_below(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    if is_fragment(path):
        assert not text.startswith("#!")
        return
    if path.parent == STORE_LUA and path.stem in STORE_COMPOSED:
        text = lua.script("registry.store", path.stem, STORE_COMPOSED[path.stem])  # the calls its fragments make
    assert lua.flags(text) <= KNOWN_FLAGS
    assert text.split("\n")[1].startswith("-- "), "the KEYS/ARGV header comment follows the shebang"
    called = set(re.findall(r"redis\.p?call\('([A-Z]+)'", text))
    if "no-writes" in lua.flags(text):
        assert not called & WRITES
    # A script that only reads would be refused on a replica and under OOM without the flag.
    if not called & WRITES:
        assert "no-writes" in lua.flags(text)


def test_read_only_query_scripts_are_flagged_no_writes() -> None:
    flagged = {name for name in scripts._NAMES if "no-writes" in lua.flags(scripts.script_text(name))}
    # pick, page, select and the *_to_bitmap scripts write temporary bitmaps.
    assert flagged == {"walk", "check", "uuids", "records", "sortread"}


def test_a_composed_script_keeps_its_shebang_first_and_every_line() -> None:
    text = scripts.script_text("check")
    own = lua.source("registry.query", "check")
    parts = [lua.source("registry.query", n) for n in ("lib", "checklib")]
    assert text.split("\n")[0] == "#!lua flags=no-writes"
    assert text.count("#!") == 1
    assert text.count("\n") == own.count("\n") + sum(p.count("\n") for p in parts)
    assert text.endswith(own.split("\n", 1)[1])


def test_shebang_is_required_and_checked() -> None:
    with pytest.raises(ValueError, match="starts with"):
        lua.shebang("-- no shebang\nreturn 1")
    with pytest.raises(ValueError, match="starts with"):
        lua.shebang("#!luax\nreturn 1")
    assert lua.flags("#!lua\nreturn 1") == frozenset()
    assert lua.flags("#!lua flags=no-writes,allow-oom\nreturn 1") == {"no-writes", "allow-oom"}


def test_a_fragment_with_a_shebang_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = {"main": "#!lua\nreturn f()\n", "frag": "#!lua\nlocal function f() return 1 end\n"}
    monkeypatch.setattr(lua, "source", lambda package, name: texts[name])
    with pytest.raises(ValueError, match="fragment"):
        lua.script.__wrapped__("pkg", "main", ("frag",))
    texts["frag"] = "local function f() return 1 end\n"
    assert lua.script.__wrapped__("pkg", "main", ("frag",)) == "#!lua\nlocal function f() return 1 end\nreturn f()\n"
