"""A JSON answer's shape with every value masked, for the operator's log and advice.

`outline({"id": 7, "role": {"name": "admin"}})` is `{"id": <int>, "role": {"name": <str>}}`:
names and types, never a value, so a backend answer that did not fit can be
described without leaking a token or a person's data.
"""

from collections.abc import Mapping
from typing import Any


def outline(data: Any, *, depth: int = 3) -> str:
    """The JSON's shape with every value masked: `{"id": <int>, "role": {"name": <str>}}`.

    What the operator may read in a log line: names and types, never values.
    """
    if isinstance(data, Mapping):
        if depth == 0:
            return "{…}"
        inner = ", ".join(
            f'"{k}": {outline(v, depth=depth - 1)}' for k, v in list(data.items())[:12]
        )
        more = ", …" if len(data) > 12 else ""
        return "{" + inner + more + "}"
    if isinstance(data, list):
        if not data:
            return "[]"
        if depth == 0:
            return "[…]"
        return f"[{outline(data[0], depth=depth - 1)}{', …' if len(data) > 1 else ''}]"
    if isinstance(data, bool):
        return "<bool>"
    if data is None:
        return "null"
    return f"<{type(data).__name__}>"
