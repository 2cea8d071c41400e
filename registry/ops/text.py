"""Text built from request or event data, made safe to print: control characters escaped, credentials redacted."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

# C0 controls, DEL and C1 controls (ESC starts terminal sequences; CR/LF forge log lines).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with every control character escaped (``\\n``, ``\\x1b``): one line, no terminal sequences."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def redact_url(url: str) -> str:
    """``url`` without its password (``redis://:***@host:port/0``); unparsable URLs are shown as ``<url>``."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return printable(url)
        user = parts.username or ""
        host = parts.hostname or ""
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port is not None else ""
        return printable(urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}")))
    except ValueError:
        return "<url>"
