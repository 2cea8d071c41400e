"""Printing request and event data: control characters escaped, credentials never shown."""

from __future__ import annotations

import pytest

from registry.ops.text import printable, redact_url


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("alice", "alice"),
        ("x\n2026-12-01 CRITICAL - FORGED", "x\\n2026-12-01 CRITICAL - FORGED"),
        ("\x1b[2J\x1b]0;pwn\x07", "\\x1b[2J\\x1b]0;pwn\\x07"),
        ("nul\x00byte\r", "nul\\x00byte\\r"),
        ("c1\x9bcsi", "c1\\x9bcsi"),
        ("ünïcødé ok", "ünïcødé ok"),
    ],
)
def test_printable_escapes_controls(raw: str, shown: str) -> None:
    assert printable(raw) == shown


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:secret@db:6380/1", "redis://:***@db:6380/1"),
        (
            "rediss://app:p%40ss%2Fw%3Ard%25@[::1]:6379/0?ssl_ca_certs=/ca.pem",
            "rediss://app:***@[::1]:6379/0?ssl_ca_certs=/ca.pem",
        ),
        ("redis://:secret@host", "redis://:***@host"),
        ("redis://:secret@host:notaport", "<url>"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "secret" not in redact_url(url) and "p%40ss" not in redact_url(url)
