"""A JSON document whose one long list is written as it is made: the same text as
``json.dumps({**head, key: list(items)}, indent=indent, sort_keys=sort_keys)``, without
holding the list (a million accounts' results held whole took a process to 6.5 GB, their text
is under 1 GB).

The items are encoded ``CHUNK`` at a time by the compiled encoder (one list each, its brackets
cut off); the first chunk is encoded before anything is written, so a book of fewer items
fails, if it fails, with nothing on stdout.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator, Mapping
from itertools import islice
from typing import Any, TextIO

CHUNK = 2_000  # items encoded at a time


def json_document_text(head: Mapping[str, Any], key: str, items: Iterable[Any],
                       indent: int | None, sort_keys: bool = False) -> Iterator[str]:
    """The text of ``{**head, key: [items...]}`` (``key`` not in ``head``) in pieces, equal
    once joined to ``json.dumps`` of the whole document with the same ``indent`` (None or a
    number of spaces) and ``sort_keys``, non-finite numbers refused as it refuses them."""
    if key in head:
        raise ValueError(f"the list's key {key!r} is in the head too")
    pieces = _chunks(iter(items), indent, sort_keys)
    first = next(pieces, None)  # encoded before anything is given out
    if first is None:
        yield json.dumps({**head, key: []}, indent=indent, sort_keys=sort_keys, allow_nan=False)
        return
    marker = json.dumps(f"\x00{uuid.uuid4().hex}")  # the list's one item in the frame's text
    frame = json.dumps({**head, key: [json.loads(marker)]}, indent=indent, sort_keys=sort_keys,
                       allow_nan=False)
    at = frame.index(marker)
    yield frame[:frame.rindex("[", 0, at) + 1]
    yield first
    separator = ", " if indent is None else ","
    for piece in pieces:
        yield separator + piece
    yield frame[at + len(marker):]


def _chunks(items: Iterator[Any], indent: int | None, sort_keys: bool) -> Iterator[str]:
    """Each chunk's items as they stand inside the document's list (at depth 2)."""
    while chunk := list(islice(items, CHUNK)):
        text = json.dumps(chunk, indent=indent, sort_keys=sort_keys, allow_nan=False)[1:-1]
        if indent is not None:  # items at depth 1 in their own list, at depth 2 here
            text = text[:-1].replace("\n", "\n" + " " * indent)
        yield text


def write_json_document(out: TextIO, head: Mapping[str, Any], key: str, items: Iterable[Any],
                        indent: int | None) -> None:
    """``json_document_text`` written to ``out`` piece by piece, with a final line feed."""
    for piece in json_document_text(head, key, items, indent):
        out.write(piece)
    out.write("\n")
