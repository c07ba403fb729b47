"""How the reference API spells its answers (docs/settings.md, "Its shapes").

Roles in `/users/me` and in the access token (AUTHAPI_ME_ROLES,
AUTHAPI_ROLE_CASE), and token fields at dotted paths of a JSON answer
(AUTHAPI_ACCESS_FIELD=`data.tokens.access`).
"""

import hashlib

from django.core.exceptions import ImproperlyConfigured

from .conf import api_settings

# Stable ids for the demo roles; any other role gets one from its name.
ROLE_IDS = {"admin": 1, "evaluator": 2, "viewer": 3}
GUEST = {"roles": {"guest": True}}


def role_name(role: str) -> str:
    """`role` as the API spells it: as stored, or title case ("Admin")."""
    return role.title() if api_settings.role_case == "title" else role


def role_names(roles) -> list[str]:
    return [role_name(role) for role in roles]


def role_id(role: str) -> int:
    """A stable integer id for `role`, whatever its case: 1-3 for the demo roles."""
    key = role.lower()
    if key in ROLE_IDS:
        return ROLE_IDS[key]
    return 100 + int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 900_000


def profile(user) -> dict:
    """The `/users/me` body of `user`, roles spelt as AUTHAPI_ME_ROLES says.

    `list` ["admin"]; `string` "admin"; `object` {"role": {"id": 1, "name":
    "admin"}} instead of `roles`; `objects` [{"id": 1, "name": "admin"}];
    `map` {"admin": true}; `none`: no roles in the body (only in the token).
    """
    data = user.as_profile()
    roles = role_names(data.pop("roles"))
    shape = api_settings.me_roles
    if shape == "list":
        data["roles"] = roles
    elif shape == "string":
        data["roles"] = roles[0] if roles else None
    elif shape == "object":
        data["role"] = {"id": role_id(roles[0]), "name": roles[0]} if roles else None
    elif shape == "objects":
        data["roles"] = [{"id": role_id(role), "name": role} for role in roles]
    elif shape == "map":
        data["roles"] = dict.fromkeys(roles, True)
    return data


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
