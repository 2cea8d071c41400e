"""A small Server-Sent Events client for tests: parses per the HTML spec over a real httpx stream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class SseMessage:
    event: str  # "message" when the server named none; "" for a block without data (no browser event)
    data: str
    id: str  # the stream's last event id once this message was dispatched

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class SseStream:
    """One connection's parser state; ``last_event_id`` follows the spec, id-only blocks included."""

    last_event_id: str = ""
    retry_ms: int | None = None
    comments: list[str] = field(default_factory=list)

    async def messages(self, response: httpx.Response) -> AsyncIterator[SseMessage]:
        data: list[str] = []
        event = ""
        pending_id: str | None = None
        async for line in response.aiter_lines():
            if line == "":
                # Dispatch: the id buffer becomes the last event id even when there is no data.
                if pending_id is not None:
                    self.last_event_id = pending_id
                if data:
                    yield SseMessage(event or "message", "\n".join(data), self.last_event_id)
                else:
                    # A browser fires nothing here; tests still see the (possibly moved) position.
                    yield SseMessage("", "", self.last_event_id)
                pending_id = None
                data, event = [], ""
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                data.append(value)
            elif name == "event":
                event = value
            elif name == "id" and "\0" not in value:
                pending_id = value
            elif name == "retry" and value.isdigit():
                self.retry_ms = int(value)


async def open_stream(
    client: httpx.AsyncClient,
    url: str,
    params: Any = None,
    last_event_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[httpx.Response, SseStream]:
    """Open a watch; the caller must close the response (``await resp.aclose()``)."""
    headers = {"Accept": "text/event-stream", **(headers or {})}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    req = client.build_request("GET", url, params=params, headers=headers)
    resp = await client.send(req, stream=True)
    stream = SseStream(last_event_id=last_event_id or "")
    return resp, stream
