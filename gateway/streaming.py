"""The streamed-answer transform: ``feed(bytes) -> bytes to send``,
``finish() -> bytes to send``, ``fail(code) -> bytes to send``.

The relay cuts the provider's bytes into whole SSE events and hands on every
complete event as soon as it has arrived, in the provider's order and byte for
byte; an incomplete event waits for its end. This is the place the answer scan
(the holdback window) plugs in: it sees whole events and decides what to send.
"""

from .errors import stream_error_event
from .sse import EventSplitter, SSEError


class StreamRelay:
    def __init__(self, provider):
        self.provider = provider
        self.failure = None  # the reason code when the gateway had to cut the stream
        self._events = EventSplitter()

    def feed(self, data):
        if self.failure:
            return b""
        try:
            return b"".join(self._events.feed(data))
        except SSEError:
            return self.fail("upstream_error")

    def finish(self):
        if self.failure:
            return b""
        return self._events.finish()

    def fail(self, code):
        """End the stream with the provider-shaped error event (SPEC section 5)."""
        if self.failure:
            return b""
        self.failure = code
        # An incomplete event is dropped: glued to the error event it would
        # corrupt the framing the agent's SDK parses.
        self._events.finish()
        return stream_error_event(code, self.provider)
