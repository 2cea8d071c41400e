"""Verified-token memory: a repeated token is not verified again, a failing or expired one always is."""

from __future__ import annotations

import time
from typing import Any

import pytest

from api.token_cache import INLINE_TOKEN_BYTES, VerifiedTokens
from registry.auth.principal import Principal
from registry.auth.tokens import Verifier, mint
from registry.errors import Unauthorized
from registry.settings import load_settings

SECRET = "token-cache-test-secret-" + "c" * 32


class Counting(Verifier):
    calls = 0

    def verify(self, token: str) -> Principal:
        type(self).calls += 1
        return super().verify(token)


def verifier() -> Counting:
    base = Verifier.from_settings(load_settings({}, auth_secret=SECRET))
    assert base is not None
    Counting.calls = 0
    return Counting(**{f: getattr(base, f) for f in base.__dataclass_fields__})


async def test_repeated_tokens_are_verified_once_and_failures_every_time() -> None:
    v = verifier()
    tokens = VerifiedTokens(v, size=2)
    settings = load_settings({}, auth_secret=SECRET)
    good = mint(settings, "alice", ["11111111-1111-4111-8111-111111111111"])
    for _ in range(5):
        assert (await tokens.principal(good)).user_id == "alice"
    assert Counting.calls == 1
    bad = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")
    for _ in range(3):
        with pytest.raises(Unauthorized):
            await tokens.principal(bad)
    assert Counting.calls == 4
    # Past its expiry a remembered token is verified again, and refused.
    short = mint(settings, "bob", [], admin=True, ttl_s=1, now=int(time.time()) - 100)
    with pytest.raises(Unauthorized, match="expired"):
        await tokens.principal(short)


async def test_big_tokens_are_verified_in_a_thread(monkeypatch: Any) -> None:
    v = verifier()
    tokens = VerifiedTokens(v)
    settings = load_settings({}, auth_secret=SECRET)
    big = mint(settings, "carol", [f"00000000-0000-4000-8000-{i:012x}" for i in range(200)])
    assert len(big) > INLINE_TOKEN_BYTES
    import threading

    seen: list[str] = []
    original = Counting.verify

    def spy(self: Counting, token: str) -> Principal:
        seen.append(threading.current_thread().name)
        return original(self, token)

    monkeypatch.setattr(Counting, "verify", spy)
    assert len((await tokens.principal(big)).projects) == 200
    assert seen and seen[0] != threading.main_thread().name
