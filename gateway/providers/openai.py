"""The OpenAI Chat Completions API, sans I/O: which text is scanned, and the streamed text.

Scanned prompt text (SPEC section 5): every message's string ``content`` and
the ``text`` parts of a content list, in messages of every role. Not prompt
text: ``image_url`` / ``input_audio`` / ``file`` parts, tool call
``arguments``, tool definitions, names, metadata.

Streamed answer text is a chunk's ``choices[k].delta.content``. With ``n > 1``
the provider sends each choice's delta in a chunk of its own, so one chunk
carries text for at most one choice; ``TextDelta.index`` is that choice's
``index``. A chunk carrying text for two choices is refused (ValueError) so
the caller fails closed rather than rewriting a chunk it cannot split.
``data: [DONE]``, usage-only chunks (``choices: []``), role and finish chunks,
and the provider's own ``{"error": ...}`` event are not deltas.
"""

from .shared import TextDelta, event_json, object_strings, with_delta_text

PROVIDER = "openai"
__all__ = ["PROVIDER", "TextDelta", "answer_strings", "prompt_strings", "text_delta", "with_text"]


def _is_prompt_text(document, path):
    """Whether the string value at ``path`` of the request ``document`` is scanned."""
    match path:
        case ("messages", int(), "content"):
            return True
        case ("messages", int(i), "content", int(j), "text"):
            part = document["messages"][i]["content"][j]
            return part.get("type") == "text"
    return False


def prompt_strings(raw, document=None):
    """The strings of a request body that are scanned prompt text (``document``: its decoding, if at hand).

    Raises ValueError when the body is not a JSON object or is ambiguous.
    """
    return object_strings(raw, _is_prompt_text, document)


def _is_answer_text(document, path):
    match path:
        case ("choices", int(), "message", "content"):
            return True
    return False


def answer_strings(raw):
    """The strings of a non-streamed answer that are generated text."""
    return object_strings(raw, _is_answer_text)


def _delta(event):
    """(TextDelta, data, path of the text) of a chunk carrying text, else None."""
    parsed = event_json(event, end_marker=b"[DONE]")
    if parsed is None:
        return None
    document, data = parsed
    choices = document.get("choices")
    if choices is None:
        return None  # the provider's error event, or nothing a client could show
    if not isinstance(choices, list):
        raise ValueError("stream chunk whose choices is not a list")
    carrying = []
    for k, choice in enumerate(choices):
        if not isinstance(choice, dict):
            raise ValueError("stream chunk with a choice that is not an object")
        delta = choice.get("delta")
        if delta is None:
            continue
        if not isinstance(delta, dict):
            raise ValueError("stream chunk with a delta that is not an object")
        content = delta.get("content")
        if content is None or content == "":
            continue
        if not isinstance(content, str) or type(choice.get("index")) is not int:
            raise ValueError("stream chunk with non-string content or no integer index")
        carrying.append((k, TextDelta(content, choice["index"])))
    if not carrying:
        return None
    if len(carrying) > 1:
        raise ValueError("multi-choice stream chunk: more than one choice carries text")
    k, delta = carrying[0]
    return delta, data, ("choices", k, "delta", "content")


def text_delta(event):
    """The generated text one raw SSE event carries, or None for framing.

    Raises ValueError for an event whose data cannot be read, or that carries
    text for more than one choice.
    """
    found = _delta(event)
    return found[0] if found else None


def with_text(event, new_text):
    """The same text-delta event carrying ``new_text``; every other byte unchanged."""
    return with_delta_text(event, _delta(event), new_text)


def asks_for_stream_usage(document):
    options = document.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def with_stream_usage(raw, document):
    """The request body asking for the stream's usage chunk, or None when it
    cannot be added without rewriting more than an append.

    Only a body with no ``stream_options`` at all is changed: the member is
    added at the end of the top-level object, every other byte unchanged.
    """
    if "stream_options" in document:
        return None
    end = raw.rstrip().rfind(b"}")
    if end < 0:
        return None
    return raw[:end] + b',"stream_options":{"include_usage":true}' + raw[end:]
