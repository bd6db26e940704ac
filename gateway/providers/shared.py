"""What both provider adapters share: reading bodies and SSE event JSON.

The adapters decide which strings are text; this module finds them in a body,
reads one event's JSON, and writes one string of it back.

Reading is strict (``jsonspans.loads``): duplicate keys would let the scan and
the provider or the agent's SDK see different text. Writing keeps the rest of
the event byte for byte: the ``event:`` line, other fields, line endings, and
every other byte of the JSON.
"""

import re
from dataclasses import dataclass

from .. import jsonspans
from ..sse import event_data

_LINE = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


@dataclass(frozen=True)
class TextDelta:
    text: str    # the generated text this event carries
    index: int   # the content block (Anthropic) or choice (OpenAI) it belongs to


def object_strings(raw, wanted, document=None):
    """The strings (``jsonspans.StringAt``) of the JSON object ``raw`` at paths
    ``wanted(document, path)`` accepts, in document order.

    ``document`` is the decoded body (decoded here unless given), for the
    predicate to look at a string's siblings (a block's ``type``). Spans are
    found only for the strings a rewrite touches (``jsonspans.locate``).
    Raises ValueError when ``raw`` is not one unambiguous JSON object.
    """
    if document is None:
        document = jsonspans.loads(raw)
    if not isinstance(document, dict):
        raise ValueError("the body is not a JSON object")
    return [jsonspans.StringAt(path, value) for path, value in jsonspans.document_strings(document)
            if wanted(document, path)]


def event_json(event, end_marker=None):
    """(decoded JSON, raw data bytes) of one event, or None for an event without
    data or whose data is the stream's ``end_marker``.

    Raises ValueError when the data is not one JSON object.
    """
    data = event_data(event)
    if data is None or data == end_marker:
        return None
    document = jsonspans.loads(data)
    if not isinstance(document, dict):
        raise ValueError("stream event data is not a JSON object")
    return document, data


def with_delta_text(event, found, new_text):
    """``event`` carrying ``new_text``; ``found`` is the adapter's reading of it."""
    if found is None:
        raise ValueError("not a text delta event")
    _, data, path = found
    return replace_string(event, data, path, new_text)


def replace_string(event, data, path, new_text):
    """``event`` with the string at ``path`` of its data JSON set to ``new_text``."""
    found = jsonspans.string_values(data, lambda p: p == path)
    if len(found) != 1:
        raise ValueError("stream event has no single string at the expected path")
    return _with_data(event, jsonspans.replace_strings(data, [(found[0], new_text)]))


def _with_data(event, data):
    """``event`` with the data its ``data:`` lines carry replaced by ``data``.

    A provider may split its JSON over several ``data:`` lines (the reader
    joins them with newlines). A splice never adds or removes a newline (a
    JSON string literal holds none), so each line keeps its place, its
    ``data:`` prefix and its line ending, and gets its own piece back.
    """
    lines = _LINE.findall(event)
    pieces = data.split(b"\n")
    if sum(line.startswith(b"data:") for line in lines) != len(pieces):
        raise ValueError("stream event data does not fit its data lines")
    out, pieces = [], iter(pieces)
    for line in lines:
        if line.startswith(b"data:"):
            prefix = b"data: " if line.startswith(b"data: ") else b"data:"
            value = line.rstrip(b"\r\n")
            line = prefix + next(pieces) + line[len(value):]
        out.append(line)
    return b"".join(out)
