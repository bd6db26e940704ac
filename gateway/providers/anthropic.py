"""The Anthropic Messages API, sans I/O: which text is scanned, and the streamed text.

Scanned prompt text (SPEC section 5): ``system`` (a string, or its ``text``
blocks), every message's string ``content``, ``text`` blocks, and
``tool_result`` content (a string, or its ``text`` blocks), in messages of
every role. Everything else is not prompt text: image and document sources
(base64 ``data``), ``tool_use`` input, tool definitions, metadata.

Block types are read from the decoded document, so a body whose blocks could
be read two ways (a duplicate ``type`` key) is refused, never guessed at.

Streamed answer text is the ``text_delta`` of a ``content_block_delta``
event. The event is recognised by its data's ``type``, the field the SDK
dispatches on, not by its ``event:`` line, so a mislabelled event cannot carry
text past the scan.
"""

from .shared import TextDelta, event_json, object_strings, with_delta_text

PROVIDER = "anthropic"
__all__ = ["PROVIDER", "TextDelta", "answer_strings", "prompt_strings", "text_delta", "with_text"]


def _type(block):
    return block.get("type") if isinstance(block, dict) else None


def _is_prompt_text(document, path):
    """Whether the string value at ``path`` of the request ``document`` is scanned."""
    match path:
        case ("system",) | ("messages", int(), "content"):
            return True
        case ("system", int(i), "text"):
            return _type(document["system"][i]) == "text"
        case ("messages", int(i), "content", int(j), "text"):
            return _type(document["messages"][i]["content"][j]) == "text"
        case ("messages", int(i), "content", int(j), "content"):
            return _type(document["messages"][i]["content"][j]) == "tool_result"
        case ("messages", int(i), "content", int(j), "content", int(k), "text"):
            result = document["messages"][i]["content"][j]
            return _type(result) == "tool_result" and _type(result["content"][k]) == "text"
    return False


def prompt_strings(raw, document=None):
    """The strings of a request body that are scanned prompt text (``document``: its decoding, if at hand).

    Raises ValueError when the body is not a JSON object or is ambiguous.
    """
    return object_strings(raw, _is_prompt_text, document)


def _is_answer_text(document, path):
    match path:
        case ("content", int(i), "text"):
            return _type(document["content"][i]) == "text"
    return False


def answer_strings(raw):
    """The strings of a non-streamed answer that are generated text."""
    return object_strings(raw, _is_answer_text)


def _delta(event):
    """(TextDelta, data, path of the text) of a text-delta event, else None."""
    parsed = event_json(event)
    if parsed is None:
        return None
    document, data = parsed
    if document.get("type") != "content_block_delta":
        return None
    delta = document.get("delta")
    if not isinstance(delta, dict):
        raise ValueError("content_block_delta without a delta object")
    if delta.get("type") != "text_delta":
        return None  # input_json_delta, thinking_delta, ...: framing
    text, index = delta.get("text"), document.get("index")
    if not isinstance(text, str) or type(index) is not int:
        raise ValueError("text_delta without a string text and an integer index")
    return TextDelta(text, index), data, ("delta", "text")


def text_delta(event):
    """The generated text one raw SSE event carries, or None for framing.

    Raises ValueError for an event whose data cannot be read.
    """
    found = _delta(event)
    return found[0] if found else None


def with_text(event, new_text):
    """The same text-delta event carrying ``new_text``; every other byte unchanged."""
    return with_delta_text(event, _delta(event), new_text)
