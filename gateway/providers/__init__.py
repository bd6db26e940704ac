"""The providers the gateway routes to, and what it needs to know of each.

Adapters are sans I/O: they read and rewrite bodies and events, and never touch
a socket.
"""

from dataclasses import dataclass

# The data-plane routes (SPEC section 5). Paths match exactly: no normalization.
ROUTES = {
    "/v1/messages": "anthropic",
    "/v1/chat/completions": "openai",
}
MAX_MODEL_CHARS = 256


@dataclass(frozen=True)
class CallRequest:
    """What the gateway reads from a parsed request body."""
    model: str
    stream: bool


def read_call(document):
    """A parsed JSON body -> CallRequest, or None when it is not a call (400)."""
    if not isinstance(document, dict):
        return None
    model = document.get("model")
    if not isinstance(model, str) or not model or len(model) > MAX_MODEL_CHARS:
        return None
    if any(c.isspace() or not c.isprintable() for c in model):
        return None
    return CallRequest(model, document.get("stream") is True)


from . import anthropic, openai  # noqa: E402  (the adapters import shared helpers only)

# provider name -> adapter module: prompt_strings, answer_strings, text_delta, with_text
ADAPTERS = {"anthropic": anthropic, "openai": openai}
