"""The streamed-answer transform: ``feed(bytes) -> bytes to send``,
``finish() -> bytes to send``, ``fail(code) -> bytes to send``.

Theory of operation
-------------------
The provider's bytes are cut into whole SSE events (``gateway.sse``). Without
answer scanning every complete event is passed on at once, byte for byte.

With scanning, the generated text of each content block or choice (Anthropic
``text_delta``, OpenAI ``delta.content``; the adapter says which events carry
text) goes through its own holdback window (``engine.dlp.holdback``), which
releases text, already redacted, as soon as no pattern can still be matching
it. Events wait in one queue in the provider's order:

- a text event waits until all of its text has been released; it then goes
  out carrying the released text (byte for byte as received when nothing in
  it was redacted, otherwise with the redacted text). When a release contains
  a redaction the released text goes out in the first waiting event of that
  block, and the other events it consumed are dropped;
- a framing event (roles, tool calls, usage, stops) ends the text of the
  block or choice it names (all of them for message-level events): those
  windows are flushed first, then the event waits behind the text events
  queued before it. Pings and comments do not end any text (a secret may
  straddle them); they only wait their turn.

A ``block`` finding ends the stream: the text released before the match goes
out, then the provider-shaped error event, and nothing more. If the provider's
stream breaks, what is held is scanned and delivered, then the error event.
"""

import json
from collections import deque

from .engine.dlp.holdback import HoldbackScanner
from .errors import stream_error_event
from .sse import EventSplitter, SSEError, event_data
from .usage.tokens import is_usage_only_chunk


class _Text:
    """A text event waiting in the queue, and what it will carry."""
    __slots__ = ("event", "index", "text", "left", "parts", "split")

    def __init__(self, event, index, text):
        self.event, self.index, self.text = event, index, text
        self.left = len(text)   # characters of its text not yet released
        self.parts = []         # released (redacted) text it will carry
        self.split = False      # part of it already went out in a copy of it


class StreamRelay:
    def __init__(self, provider, adapter=None, scanner=None, window_chars=2048, usage=None, drop_usage_chunk=False):
        self.provider = provider
        self.usage = usage                        # a StreamUsage fed every event, or None
        self.drop_usage_chunk = drop_usage_chunk  # the usage chunk the gateway asked for, not the agent
        self.failure = None  # the reason code when the gateway had to cut the stream
        self.redactions = 0
        self._events = EventSplitter()
        self._adapter = adapter if scanner is not None else None
        self._scanner = scanner
        self._window = window_chars
        self._windows = {}      # content index -> HoldbackScanner
        self._queue = deque()   # _Text or raw framing event bytes, in the provider's order

    # -- the relay's interface ---------------------------------------------

    def feed(self, data):
        if self.failure:
            return b""
        try:
            events = self._observe(self._events.feed(data))
        except SSEError:
            return self.fail("upstream_error")
        if self._adapter is None:
            return b"".join(events)
        out = []
        for event in events:
            out.append(self._on_event(event))
            if self.failure:
                break
        return b"".join(out)

    def finish(self):
        if self.failure:
            return b""
        tail = b"".join(self._observe([self._events.finish()]))
        if self._adapter is None:
            return tail
        # An unterminated last event is read like any other (its text is
        # scanned), and goes out as the provider sent it.
        out = [self._on_event(tail)] if tail else []
        if not self.failure:
            out.append(self._flush_all())
        return b"".join(out)

    def fail(self, code):
        """End the stream with the provider-shaped error event (SPEC section 5),
        after delivering what is held (scanned)."""
        if self.failure:
            return b""
        held = self._flush_all() if self._adapter is not None else b""
        if self.failure:  # the flush itself found a block
            return held
        self.failure = code
        # An incomplete event is dropped: glued to the error event it would
        # corrupt the framing the agent's SDK parses.
        self._events.finish()
        return held + stream_error_event(code, self.provider)

    def abort(self, code):
        """End the stream with the error event at once, dropping what is held
        unscanned: for a fault of the gateway's own, after which its state
        cannot be trusted to scan."""
        if self.failure:
            return b""
        self.failure = code
        self._queue.clear()
        self._windows.clear()
        self._events.finish()
        return stream_error_event(code, self.provider)

    def _observe(self, events):
        """Count usage on every event; drop the usage chunk the agent did not ask for."""
        if self.usage is not None:
            for event in events:
                self.usage.feed(event)
        if self.drop_usage_chunk:
            events = [event for event in events if not is_usage_only_chunk(event)]
        return events

    # -- scanning ------------------------------------------------------------

    def _on_event(self, event):
        try:
            delta = self._adapter.text_delta(event)
        except ValueError:
            return self.fail("upstream_error")  # garbage in the stream: never relayed unscanned
        if delta is not None:
            item = _Text(event, delta.index, delta.text)
            self._queue.append(item)
            window = self._windows.get(delta.index)
            if window is None:
                window = self._windows[delta.index] = HoldbackScanner(self._scanner, self._window, "response")
            released, blocked = window.feed(delta.text)
            return self._released(delta.index, window, released, blocked)
        if _is_neutral(event):
            self._queue.append(event)
            return self._drain()
        flushed = self._flush(_named_indexes(event))
        if self.failure:
            return flushed
        self._queue.append(event)
        return flushed + self._drain()

    def _flush_all(self):
        return self._flush(None)

    def _flush(self, indexes):
        """End the text of the windows of ``indexes`` (None: all of them)."""
        out = []
        for index, window in list(self._windows.items()):
            if indexes is not None and index not in indexes:
                continue
            released, blocked = window.finish()
            del self._windows[index]
            out.append(self._released(index, window, released, blocked))
            if self.failure:
                break
        return b"".join(out)

    def _released(self, index, window, released, blocked):
        """Give the ``released`` text to the waiting events of block ``index``."""
        waiting = [item for item in self._queue if isinstance(item, _Text) and item.index == index and item.left]
        consumed = sum(item.left for item in waiting) - window.held
        source = "".join(item.text[len(item.text) - item.left:] for item in waiting)
        verbatim = released == source[:consumed]
        if not verbatim:
            self.redactions += released.count("[REDACTED:")
            if waiting:
                waiting[0].parts.append(released)
        for item in waiting:
            take = min(item.left, consumed)
            if verbatim and take:
                start = len(item.text) - item.left
                item.parts.append(item.text[start:start + take])
            item.left -= take
            consumed -= take
        if not blocked:
            return self._drain()
        out = self._drain(blocking=True)
        self.failure = "response_blocked"
        self._queue.clear()
        self._windows.clear()
        return out + stream_error_event("response_blocked", self.provider, error_type="permission_error")

    def _drain(self, blocking=False):
        """Send what is no longer waiting, in order. ``blocking``: the stream
        ends here, so the first event still holding text sends its released
        part and everything behind it is dropped."""
        out = []
        while self._queue:
            item = self._queue[0]
            if not isinstance(item, _Text):
                out.append(self._queue.popleft())
                continue
            if item.left:
                if item.parts:
                    # Released text of an event that still holds more goes out
                    # now, in a copy of the event: time to first token.
                    out.append(self._adapter.with_text(item.event, "".join(item.parts)))
                    item.parts, item.split = [], True
                break
            self._queue.popleft()
            text = "".join(item.parts)
            if not item.split and text == item.text:
                out.append(item.event)  # untouched: byte for byte as the provider sent it
            elif text:
                out.append(self._adapter.with_text(item.event, text))
        if blocking:
            self._queue.clear()
        return b"".join(out)


def _named_indexes(event):
    """The content blocks (Anthropic ``index``) or choices (OpenAI
    ``choices[].index``) a framing event ends the text of: a block's stop, a
    choice's finish or tool call ends only that one. None (all) for events
    about the whole message: message_delta, message_stop, usage, [DONE], errors."""
    data = event_data(event)
    try:
        document = json.loads(data) if data is not None else None
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, dict):
        return None
    if isinstance(document.get("index"), int):
        return {document["index"]}
    choices = document.get("choices")
    if isinstance(choices, list) and choices:
        indexes = [c.get("index") for c in choices if isinstance(c, dict)]
        if all(isinstance(i, int) for i in indexes):
            return set(indexes)
    return None


def _is_neutral(event):
    """A ping or a comment-only event: it does not end the generated text."""
    data = event_data(event)
    if data is None:
        return True
    return data.replace(b" ", b"") == b'{"type":"ping"}'
