"""How deeply a JSON value nests, measured without parsing it (so without recursion).

Python's ``json`` and PostgreSQL's ``jsonb`` input both recurse once per level: a value a few hundred
levels deep can exhaust a thread's stack (a ``RecursionError`` that used to fail a whole day). A value is
therefore checked here first, iteratively, and one nested deeper than ``MAX_JSON_DEPTH`` is rejected as
``invalid_json:depth`` for its record alone.
"""

from __future__ import annotations

import re

#: Deepest nesting of objects and arrays a JSON value may have (a scalar is 0, ``{}`` and ``[]`` are 1,
#: ``{"a": [1]}`` is 2). A JSON-lines record is one more level: its columns are the values.
MAX_JSON_DEPTH = 64

#: A JSON string (skipped whole: brackets inside strings do not nest) or one bracket.
_TOKENS = {str: re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]', re.S), bytes: re.compile(rb'"(?:[^"\\]|\\.)*"?|[\[\]{}]', re.S)}
_OPEN = {str: ("[", "{"), bytes: (b"[", b"{")}
_CLOSE = {str: ("]", "}"), bytes: (b"]", b"}")}


def json_deeper_than(text: str | bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True if the JSON text ``text`` nests objects and arrays more than ``limit`` levels deep at
    some point (brackets inside strings do not count). Iterative, linear in the length of ``text``;
    a text with ``limit`` brackets or fewer is answered without scanning. Malformed JSON is measured
    the same way (the parser then rejects it for its own reasons)."""
    kind = bytes if isinstance(text, bytes | bytearray) else str
    opening = _OPEN[kind]
    if text.count(opening[0]) + text.count(opening[1]) <= limit:
        return False
    closing = _CLOSE[kind]
    depth = 0
    for match in _TOKENS[kind].finditer(text):
        token = match.group()
        if token in opening:
            depth += 1
            if depth > limit:
                return True
        elif token in closing:
            depth = max(depth - 1, 0)
    return False
