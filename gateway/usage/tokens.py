"""Token accounting from the provider's answer, sans I/O (SPEC section 6).

``input_tokens`` counts every prompt token, cache reads and cache writes
included, and ``total = input + output``:

- Anthropic reports ``usage.input_tokens`` without the cached part, so input
  is ``input_tokens + cache_read_input_tokens + cache_creation_input_tokens``.
  A stream's ``message_start`` carries the prompt side; each
  ``message_delta`` carries cumulative counts (output, and in newer API
  versions the prompt side again), so the latest value of each field wins.
- OpenAI reports ``prompt_tokens`` with the cached part inside
  (``prompt_tokens_details.cached_tokens``: cache reads); it has no cache
  writes. A stream carries usage in one chunk when ``stream_options.include_usage``
  is set.

The model recorded is the answer's model when it names one, else the request's.
"""

import json
from dataclasses import dataclass

from ..sse import event_data


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    model: str | None = None

    @property
    def total_tokens(self):
        return self.input_tokens + self.output_tokens


def _count(value):
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _model(document):
    model = document.get("model")
    return model if isinstance(model, str) and model else None


class _Anthropic:
    def __init__(self):
        self.fields = {}

    def absorb(self, usage):
        if isinstance(usage, dict):
            for key in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"):
                if key in usage:
                    self.fields[key] = _count(usage[key])

    def usage(self, model):
        f = self.fields
        cache_read, cache_write = f.get("cache_read_input_tokens", 0), f.get("cache_creation_input_tokens", 0)
        return Usage(f.get("input_tokens", 0) + cache_read + cache_write, f.get("output_tokens", 0),
                     cache_read, cache_write, model)


def _openai_usage(usage, model):
    details = usage.get("prompt_tokens_details") if isinstance(usage.get("prompt_tokens_details"), dict) else {}
    return Usage(_count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens")),
                 _count(details.get("cached_tokens")), 0, model)


def from_answer(provider, raw):
    """Usage of a non-streamed answer body, or None when it carries none."""
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return None
    if not isinstance(document, dict) or not isinstance(document.get("usage"), dict):
        return None
    if provider == "anthropic":
        counter = _Anthropic()
        counter.absorb(document["usage"])
        return counter.usage(_model(document))
    return _openai_usage(document["usage"], _model(document))


class StreamUsage:
    """Feed every SSE event of a streamed answer; ``usage()`` at any time gives
    what has been seen so far (a cut stream is still recorded)."""

    def __init__(self, provider):
        self.provider = provider
        self.seen = False
        self._model = None
        self._anthropic = _Anthropic()
        self._openai = None

    def feed(self, event):
        data = event_data(event)
        if data is None or data.strip() == b"[DONE]":
            return
        try:
            document = json.loads(data)
        except (ValueError, RecursionError):
            return
        if not isinstance(document, dict):
            return
        if self.provider == "anthropic":
            kind = document.get("type")
            if kind == "message_start" and isinstance(document.get("message"), dict):
                message = document["message"]
                self._model = _model(message) or self._model
                self._anthropic.absorb(message.get("usage"))
                self.seen = True
            elif kind == "message_delta":
                self._anthropic.absorb(document.get("usage"))
                self.seen = True
            return
        self._model = _model(document) or self._model
        if isinstance(document.get("usage"), dict):
            self._openai = document["usage"]
            self.seen = True

    def usage(self):
        if self.provider == "anthropic":
            return self._anthropic.usage(self._model)
        return _openai_usage(self._openai or {}, self._model)


def is_usage_only_chunk(event):
    """An OpenAI chunk that carries usage and no choices: the one the gateway
    asked for, which an agent that did not ask must not receive."""
    data = event_data(event)
    try:
        document = json.loads(data) if data is not None else None
    except (ValueError, RecursionError):
        return False
    return (isinstance(document, dict) and document.get("choices") == []
            and isinstance(document.get("usage"), dict))
