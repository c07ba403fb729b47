"""How the reference API spells its answers (README, "The reference API's shapes").

Token fields at dotted paths of a JSON answer (AUTHAPI_ACCESS_FIELD=`data.tokens.access`).
"""

from django.core.exceptions import ImproperlyConfigured


def put(data: dict, keys: tuple[str, ...], value) -> None:
    """Set `value` at the key path `keys` of `data`, creating the objects on the way."""
    *parents, leaf = keys
    node = data
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            break
    if not isinstance(node, dict) or leaf in node:
        raise ImproperlyConfigured(
            f"Two values of one answer at {'.'.join(keys)!r}: check AUTHAPI_ACCESS_FIELD "
            "and AUTHAPI_REFRESH_FIELD."
        )
    node[leaf] = value


def get(data, keys: tuple[str, ...]):
    """The value at the key path `keys` of `data`, or None."""
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data
