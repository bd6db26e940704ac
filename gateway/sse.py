"""Server-sent events framing, sans I/O: bytes in, whole events out.

An event ends at a blank line; providers end lines with ``\\n`` but the SSE
grammar also allows ``\\r\\n`` and ``\\r``, so all three are accepted.
``feed()`` returns the complete events (each with its terminating blank line,
byte for byte as received) and keeps the incomplete tail; ``finish()`` returns
whatever tail is left when the stream ends. The tail is bounded: an "event"
longer than ``MAX_EVENT_BYTES`` is not an SSE stream, and ``feed`` raises.
"""

import re

MAX_EVENT_BYTES = 4 * 1024 * 1024
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r|\n\r\n|\r\n\n")


class SSEError(ValueError):
    pass


class EventSplitter:
    def __init__(self, max_event_bytes=MAX_EVENT_BYTES):
        self._buffer = b""
        self._max = max_event_bytes

    def feed(self, data):
        # Only the last 3 bytes of the old tail can begin a terminator, so the
        # scan starts there: feeding a long event byte by byte stays linear.
        resume = max(0, len(self._buffer) - 3)
        buffer = self._buffer + data if self._buffer else data
        events, start = [], 0
        for end in _EVENT_END.finditer(buffer, resume):
            events.append(buffer[start:end.end()])
            start = end.end()
        self._buffer = buffer[start:]
        if len(self._buffer) > self._max:
            raise SSEError(f"an event is longer than {self._max} bytes")
        return events

    def finish(self):
        tail, self._buffer = self._buffer, b""
        return tail


def event_data(event):
    """The joined ``data:`` lines of one raw event, or None when it has none."""
    lines = [line for line in event.splitlines() if line.startswith(b"data:")]
    if not lines:
        return None
    return b"\n".join(line[6:] if line.startswith(b"data: ") else line[5:] for line in lines)
