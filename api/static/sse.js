// Server-Sent Events read with fetch: the protocol EventSource speaks (id, event, data, retry,
// comments), but with the bearer token in a header (EventSource cannot send one, and a token in
// the URL would end up in logs) and Last-Event-ID sent on every reconnect.
"use strict";

// Opens the stream once and dispatches its events until it ends. ``state`` carries lastId and
// retryMs across reconnects. ``dispatch(event, data, id)`` returns false to stop reading.
// Returns "retry" (reconnect after state.retryMs), "relist" (410: the position is gone),
// "auth" (401/403) or null (stopped: aborted, or dispatch said so).
export async function readStream(url, headers, state, signal, dispatch, onOpen) {
  let r;
  try {
    r = await fetch(url, {
      headers: { ...headers, Accept: "text/event-stream", ...(state.lastId ? { "Last-Event-ID": state.lastId } : {}) },
      signal,
    });
  } catch (e) {
    return signal.aborted ? null : "retry";
  }
  if (r.status === 410) return "relist";
  if (r.status === 401 || r.status === 403) return "auth";
  if (!r.ok) return "retry";
  onOpen();
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "", data = [], event = "", id = null;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl).replace(/\r$/, "");
        buf = buf.slice(nl + 1);
        if (line === "") {
          if (id !== null) state.lastId = id;
          const goOn = dispatch(event || "message", data.join("\n"), state.lastId);
          data = []; event = ""; id = null;
          if (goOn === false) return null;
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? "" : line.slice(colon + 1);
        if (val.startsWith(" ")) val = val.slice(1);
        if (field === "data") data.push(val);
        else if (field === "event") event = val;
        else if (field === "id") id = val;
        else if (field === "retry" && /^\d+$/.test(val)) state.retryMs = Number(val);
      }
    }
  } catch (e) {
    if (signal.aborted) return null;
  }
  return "retry";
}
