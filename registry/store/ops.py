"""The index ops protocol: typed ops the projection writes and `lua/apply.lua` interprets, and their key table.

Each op is a tagged msgspec Struct encoded ``array_like``, so ``SetBit(key=5, value=1)`` travels
as ``["B",5,1]``: JSON that the apply script decodes with cjson in C (parsing ops in Lua cost
36 us per job). Ops never name a key: they carry its index in the call's KEYS (see KeyTable), so
the script declares every key it touches. Nor do they name the job's handle: the script
substitutes it. Scores and values travel as strings, because Lua numbers would print them rounded.

The reader is ``registry/store/lua/apply.lua``; a change to an op here changes it there too.
"""

from __future__ import annotations

import msgspec


class SetBit(msgspec.Struct, frozen=True, array_like=True, tag="B"):
    """Set (1) or clear (0) the handle's bit in the bitmap KEYS[key]."""

    key: int
    value: int


class FlipBits(msgspec.Struct, frozen=True, array_like=True, tag="S"):
    """Bit-sliced index: for each k, set the handle's bit in KEYS[k] (k > 0) or clear it in KEYS[-k] (k < 0)."""

    flips: list[int]


class SortAdd(msgspec.Struct, frozen=True, array_like=True, tag="Z"):
    """Put the job's member (uuid16 + handle) into the sort index KEYS[key] (its base, Keys.sort) with
    ``score``, first removing its entry at ``old`` (the score it is stored with; '' if none): a sort
    index finds an entry's bucket by its score (lua/sortlib.lua)."""

    key: int
    score: str
    old: str


class SortRemove(msgspec.Struct, frozen=True, array_like=True, tag="z"):
    """Remove the job's member, stored with ``score``, from the sort index KEYS[key]."""

    key: int
    score: str


class SetColumn(msgspec.Struct, frozen=True, array_like=True, tag="C"):
    """Write ``value`` into the handle's i64 slot of the value column KEYS[key]."""

    key: int
    value: str


class WidenZone(msgspec.Struct, frozen=True, array_like=True, tag="Q"):
    """Widen the handle's block (of ``block_size`` handles) in a zone map to cover ``value``.

    KEYS[max_key] holds each block's upper bound, KEYS[min_key] its lower bound plus one
    (``value_plus_one``; 0 means no value yet).
    """

    max_key: int
    value: str
    value_plus_one: str
    block_size: int
    min_key: int


class Member(msgspec.Struct, frozen=True, array_like=True, tag="M"):
    """Add (1) or remove (0) the handle in a member index: the set KEYS[set_key] until it outgrows
    the threshold, then the bitmap KEYS[bitmap_key]."""

    set_key: int
    bitmap_key: int
    present: int


Op = SetBit | FlipBits | SortAdd | SortRemove | SetColumn | WidenZone | Member

encode_ops = msgspec.json.Encoder().encode
# The Python reader, for tests and debugging; the apply script is the one that runs.
decode_ops = msgspec.json.Decoder(list[Op]).decode


class KeyTable(dict[str, int]):
    """The KEYS of one apply call: ``table[name]`` is the 1-based KEYS index of ``name`` (Lua arrays
    start at 1), the key being added on first use. Fixed keys come first, then each index key once.

    A dict whose ``__missing__`` adds the key: a lookup of a known key stays one C call, and the
    ops of a call name a few hundred keys thousands of times.
    """

    def __init__(self, fixed: list[str]) -> None:
        super().__init__((key, i + 1) for i, key in enumerate(fixed))
        self.names: list[str] = list(fixed)

    def __missing__(self, key: str) -> int:
        self.names.append(key)
        index = self[key] = len(self.names)
        return index

    def enter(self, names: list[str]) -> list[int]:
        """The indices of ``names``, the missing ones added in one go (a call's fresh jobs bring a
        hundred slice keys at once; ``__missing__`` is a Python call per key)."""
        missing = [name for name in dict.fromkeys(names) if name not in self]
        if missing:
            start = len(self.names) + 1
            self.names += missing
            self.update(zip(missing, range(start, start + len(missing)), strict=True))
        return [self[name] for name in names]
