"""The fresh-jobs protocol: a call's newly listed jobs' index contents, computed column-wise and written as whole runs.

Jobs listed for the first time in an apply call ("fresh") get consecutive handles ``first``,
``first + 1``, ... in call order, and no index holds anything at those handles yet. So what they
contribute to every index but the sort sets travels column-wise instead of as per-job ops: one
BITFIELD SET of up to 63 bits per bitmap and window of 63 fresh jobs, one SETRANGE per value
column, one widening per zone-map block and one add per member index, however many fresh jobs
the call has. The contents come from the same definitions as the diff path's ops
(``registry/store/indexes.py``: ``_bitmaps``, ``_sliced``, ``column_values``, ZONE_FIELDS,
``MEMBER_FIELDS``), gathered straight into those arguments: no op object per job, and the
bit-slice words of a window of jobs made by transposing their values as a bit matrix. Offsets
count fresh jobs (0 = the call's first); the script adds ``first``.

The reader is ``registry/store/lua/apply.lua`` (ARGV[3] and ARGV[4]).
"""

from __future__ import annotations

import struct

import msgspec

from registry.keys import Keys
from registry.store import indexes
from registry.store.indexes import (
    BSI_WIDTH,
    COLUMNS,
    MEMBER_FIELDS,
    ZONE_FIELDS,
    Row,
    _bitmaps,
    _sliced,
    column_values,
)
from registry.store.ops import KeyTable

#: Bits one BITFIELD SET writes at most (``u63``: the widest unsigned type Redis accepts).
WORD_BITS = 63


class FreshColumn(msgspec.Struct, frozen=True, array_like=True):
    """``length`` bytes of the call's column blob (ARGV[4], big-endian i64s, one per fresh job from
    ``start`` on) go into the value column KEYS[key] at the handle of fresh job ``start``."""

    key: int
    start: int
    length: int


class FreshZone(msgspec.Struct, frozen=True, array_like=True):
    """A zone map (upper bounds in KEYS[max_key], lower bounds plus one in KEYS[min_key], per block of
    ``block_size`` handles) widened to cover each fresh job's value: ``values[p]`` is fresh job p's,
    in decimal ('' for null, which widens nothing; never negative: timestamps start at 1970)."""

    max_key: int
    min_key: int
    block_size: int
    values: list[str]


class FreshMember(msgspec.Struct, frozen=True, array_like=True):
    """Fresh jobs ``offsets`` added to a member index: the set KEYS[set_key] until it outgrows the
    threshold, then the bitmap KEYS[bitmap_key]."""

    set_key: int
    bitmap_key: int
    offsets: list[int]


class Fresh(msgspec.Struct, frozen=True, array_like=True):
    """A call's column-wise writes: ``count`` fresh jobs (the script refuses a call whose fresh jobs
    it counts otherwise), their bitmap words, column runs, zone values and member adds."""

    count: int
    # Bitmap words, flat (one table for all of them, not one per word, for the script): per word
    # its bitmap's KEYS index, the first fresh job it covers, its BITFIELD type 'u<width>' (1 to
    # 63 bits) and its value in decimal (Lua numbers would round it); the first job is the word's
    # most significant bit. A job whose bit is 0 gets 0, which a fresh handle holds already.
    words: list[int | str]
    columns: list[FreshColumn]
    zones: list[FreshZone]
    members: list[FreshMember]


encode_fresh = msgspec.json.Encoder().encode
# The Python reader, for tests and debugging; the apply script is the one that runs.
decode_fresh = msgspec.json.Decoder(Fresh).decode


def _transpose_masks(blocks: int) -> list[tuple[int, int]]:
    """The delta swaps (shift, mask) that transpose ``blocks`` 64 x 64 bit matrices held in one int
    (row r of block b at bits 4096 b + 64 r ..): in round j (32, 16, ... 1), bit (r, c) with bit j
    of c set and of r clear swaps with bit (r + j, c - j), 63 j places up."""
    out = []
    for j in (32, 16, 8, 4, 2, 1):
        row = sum(1 << c for c in range(64) if c & j)
        block = sum(row << (64 * r) for r in range(64) if not r & j)
        out.append((63 * j, sum(block << (4096 * b) for b in range(blocks))))
    return out


_SWAPS = _transpose_masks(len(BSI_WIDTH))
_MATRIX = struct.Struct(f"<{64 * len(BSI_WIDTH)}Q")
_PAD = [0] * 64


def _transpose(rows: list[int]) -> tuple[int, ...]:
    """Bit matrices transposed (``len(BSI_WIDTH)`` of them, 64 rows of 64 bits each, concatenated):
    bit c of row r comes back as bit r of row c. A few operations on one big int instead of a
    Python step per set bit (a fresh job has ~60 set bits in its slices)."""
    m = int.from_bytes(_MATRIX.pack(*rows), "little")
    for shift, mask in _SWAPS:
        t = (m ^ (m >> shift)) & mask
        m ^= t ^ (t << shift)
    return _MATRIX.unpack(m.to_bytes(_MATRIX.size, "little"))


class FreshRuns:
    """Collects a call's fresh jobs, in call order, then encodes their index contents column-wise.

    Plain bitmap and member keys are entered in the call's key table as jobs bring them, slice keys
    all at once at ``encode`` (``pending_keys`` counts them meanwhile, for the call's cost); the
    words, columns and zone values are computed once, at ``encode``.
    """

    def __init__(self, keys: Keys, table: KeyTable) -> None:
        self.keys = keys
        self.table = table
        self.rows: list[Row] = []
        self._plain: list[list[int]] = []  # per fresh job: the plain bitmaps (KEYS) it is set in
        self._sliced: dict[str, list[int]] = {field: [] for field in BSI_WIDTH}
        # Per bit-sliced field: the OR of the values so far, and each bit's slice key in KEYS (0: not yet).
        self._seen = dict.fromkeys(BSI_WIDTH, 0)
        self._slice_keys = {field: [0] * width for field, width in BSI_WIDTH.items()}
        self._members: dict[tuple[str, str], tuple[int, int, list[int]]] = {}
        # Jobs listed now whose contents travel as per-job ops instead (the diff path for every job,
        # which tests compare this writer with): counted, so the script's check of how many jobs
        # get handles still holds; never mixed with column-wise ones in one call.
        self.per_job = 0

    @property
    def count(self) -> int:
        return len(self.rows) + self.per_job

    def add(self, row: Row) -> None:
        """Take the next fresh job (its handle will be the call's first plus the jobs before it)."""
        position = len(self.rows)
        self.rows.append(row)
        table = self.table
        self._plain.append([table[name] for name, value in _bitmaps(self.keys, row).items() if value])
        seen = self._seen
        for field, value in _sliced(row).items():
            self._sliced[field].append(value)
            seen[field] |= value
        members = self._members
        for kind, attr in MEMBER_FIELDS.items():
            value = getattr(row, attr)
            entry = members.get((kind, value))
            if entry is None:
                entry = members[kind, value] = (
                    table[self.keys.member_set(kind, value)],
                    table[self.keys.member_bitmap(kind, value)],
                    [],
                )
            entry[2].append(position)

    @property
    def pending_keys(self) -> int:
        """Slice keys the call will name (entered in the table at ``encode``, all at once)."""
        return sum(bits.bit_count() for bits in self._seen.values())

    def _enter_slices(self) -> None:
        for field, bits in self._seen.items():
            names = self.keys.slices(field, BSI_WIDTH[field])
            at = self._slice_keys[field]
            used = [bit for bit in range(BSI_WIDTH[field]) if bits >> bit & 1]
            for bit, key in zip(used, self.table.enter([names[bit] for bit in used]), strict=True):
                at[bit] = key

    def encode(self) -> tuple[bytes, bytes]:
        """ARGV[3] (the Fresh header as JSON) and ARGV[4] (the column blob)."""
        rows, n = self.rows, len(self.rows)
        self._enter_slices()
        words: list[int | str] = []
        for start in range(0, n, WORD_BITS):
            words += self._window(start, min(WORD_BITS, n - start))
        columns, blob = [], []
        if n:
            for field in COLUMNS:
                data = struct.pack(f">{n}q", *column_values(rows, field))
                columns.append(FreshColumn(self.table[self.keys.column(field)], 0, len(data)))
                blob.append(data)
        zones = []  # (ZONE_SIZE read when it runs, as the diff path does: tests shrink it)
        for field in ZONE_FIELDS if n else ():
            values = ["" if v is None else str(v) for v in (getattr(r, field) for r in rows)]
            bounds = self.table[self.keys.zone_max(field)], self.table[self.keys.zone_min(field)]
            zones.append(FreshZone(*bounds, indexes.ZONE_SIZE, values))
        members = [FreshMember(s, b, offsets) for s, b, offsets in self._members.values()]
        return encode_fresh(Fresh(self.count, words, columns, zones, members)), b"".join(blob)

    def _window(self, start: int, k: int) -> list[int | str]:
        """The words of fresh jobs ``start .. start + k - 1``: job ``start`` is each word's top bit
        (bit k - 1), and each word is trimmed after its last 1, so a bitmap grows no longer than
        per-bit writes would have made it."""
        acc: dict[int, int] = {}
        get = acc.get
        for p, plain in enumerate(self._plain[start : start + k]):
            bit = 1 << (k - 1 - p)
            for key in plain:
                acc[key] = get(key, 0) | bit
        # Bit-sliced fields: each a 64 x 64 bit matrix, one row per job (its value), transposed to one
        # row per bit (its word), all four at once.
        rows: list[int] = []
        for column in self._sliced.values():
            rows += reversed(column[start : start + k])  # job `start` ends up the word's top bit, k - 1
            rows += _PAD[k:]
        sliced = _transpose(rows)
        for f, (field, width) in enumerate(BSI_WIDTH.items()):
            slice_keys = self._slice_keys[field]
            for bit in range(width):
                word = sliced[64 * f + bit]
                if word:
                    acc[slice_keys[bit]] = word
        out: list[int | str] = []
        for key, word in acc.items():
            trailing = (word & -word).bit_length() - 1
            out += (key, start, f"u{k - trailing}", str(word >> trailing))
        return out
