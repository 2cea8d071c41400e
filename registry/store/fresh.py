"""The fresh-jobs protocol: a call's newly listed jobs' bitmap bits and column values, written as whole runs.

Jobs listed for the first time in an apply call ("fresh") get consecutive handles ``first``,
``first + 1``, ... in call order, and no index holds anything at those handles yet. So their
SetBit(1), FlipBits and SetColumn ops travel column-wise instead of per job: one BITFIELD SET of
up to 63 bits per bitmap and one SETRANGE per column, however many fresh jobs the call has
(a new job's ops were ~80 Redis commands, mostly one SETBIT per bit-slice). Offsets count fresh
jobs (0 = the call's first); the script adds ``first``.

The reader is ``registry/store/lua/apply.lua`` (ARGV[3] and ARGV[4]).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import msgspec

from registry.store.ops import FlipBits, Op, SetBit, SetColumn

#: Bits one BITFIELD SET writes at most (``u63``: the widest unsigned type Redis accepts).
WORD_BITS = 63


class FreshWord(msgspec.Struct, frozen=True, array_like=True):
    """Fresh jobs ``start .. start + width - 1`` in the bitmap KEYS[key]: job ``start`` is ``word``'s
    most significant bit. A job whose bit is 0 gets 0, which a fresh handle holds already."""

    key: int
    start: int
    width: int
    word: str  # decimal: Lua numbers would round it


class FreshColumn(msgspec.Struct, frozen=True, array_like=True):
    """``length`` bytes of the call's column blob (ARGV[4], big-endian i64s, one per fresh job from
    ``start`` on) go into the value column KEYS[key] at the handle of fresh job ``start``."""

    key: int
    start: int
    length: int


class Fresh(msgspec.Struct, frozen=True, array_like=True):
    """A call's column-wise writes: ``count`` fresh jobs (the script refuses a call whose fresh jobs
    it counts otherwise), their bitmap words and column runs."""

    count: int
    words: list[FreshWord]
    columns: list[FreshColumn]


encode_fresh = msgspec.json.Encoder().encode
# The Python reader, for tests and debugging; the apply script is the one that runs.
decode_fresh = msgspec.json.Decoder(Fresh).decode


class FreshRuns:
    """Collects a call's fresh jobs' bits and column values, in call order, then encodes them.

    Bits are gathered straight into the words BITFIELD writes: fresh job ``p`` is bit
    ``WORD_BITS - 1 - p % WORD_BITS`` of its word (the first job the most significant bit), one
    word per bitmap per ``WORD_BITS`` jobs, so encoding only trims each word's trailing zeros.
    """

    def __init__(self) -> None:
        self.count = 0
        self._words: list[FreshWord] = []  # finished words, of the windows before the current one
        self._bits: dict[int, int] = {}  # key -> the current window's word, untrimmed
        self._columns: dict[int, list[tuple[int, int]]] = {}  # key -> (fresh job, value)

    def take(self, ops: Sequence[Op]) -> list[Op]:
        """Take the next fresh job's bit and column ops; return the ops still to send per job."""
        position = self.count
        offset = position % WORD_BITS
        if offset == 0 and position:
            self._close_window()
        bit = 1 << (WORD_BITS - 1 - offset)
        self.count += 1
        bits, rest = self._bits, []
        for op in ops:
            kind = type(op)
            if kind is FlipBits and min(op.flips) > 0:  # type: ignore[union-attr]
                for k in op.flips:  # type: ignore[union-attr]
                    bits[k] = bits.get(k, 0) | bit
            elif kind is SetBit and op.value == 1:  # type: ignore[union-attr]
                bits[op.key] = bits.get(op.key, 0) | bit  # type: ignore[union-attr]
            elif kind is SetColumn:
                self._columns.setdefault(op.key, []).append((position, int(op.value)))  # type: ignore[union-attr]
            else:
                rest.append(op)
        return rest

    def _close_window(self) -> None:
        """Turn the current window's words into FreshWords, each up to its last 1 only, so a bitmap
        grows no longer than per-bit writes made it."""
        start = (self.count - 1) // WORD_BITS * WORD_BITS
        for key, word in self._bits.items():
            trailing = (word & -word).bit_length() - 1
            self._words.append(FreshWord(key, start, WORD_BITS - trailing, str(word >> trailing)))
        self._bits = {}

    def encode(self) -> tuple[bytes, bytes]:
        """ARGV[3] (the Fresh header as JSON) and ARGV[4] (the column blob)."""
        if self.count:
            self._close_window()
        columns, blob = [], []
        for key, values in self._columns.items():
            run: list[int] = []
            for i, (position, value) in enumerate(values):
                run.append(value)
                if i + 1 == len(values) or values[i + 1][0] != position + 1:
                    data = struct.pack(f">{len(run)}q", *run)
                    columns.append(FreshColumn(key, position + 1 - len(run), len(data)))
                    blob.append(data)
                    run = []
        return encode_fresh(Fresh(self.count, self._words, columns)), b"".join(blob)
