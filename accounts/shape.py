"""The auth backend's shape, declared in settings: where its tokens and profile are.

NestJS backends differ in where a sign-in's tokens come back (cookies, JSON
fields, or one of each), how they go out again (a cookie, `Authorization:
Bearer`, a header of their own, a JSON field), which status a wrong password
gets and where `/users/me` keeps the id and roles. `BackendShape` is that
description, read once from the settings in accounts/conf.py (the
AUTH_BACKEND_TOKEN_TRANSPORT values are shorthands for common ones); the
client (accounts/client.py) and `authcheck` act on it, so no backend needs
code of its own.

A place is written `kind:name`: `cookie:refresh_token`, `json:data.token`,
`header:xc-auth`, or a bare `bearer` / `none`.
"""

import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured

from .outline import outline

logger = logging.getLogger(__name__)

COOKIE, JSON, BEARER, HEADER, NONE = "cookie", "json", "bearer", "header", "none"
NAMED = (COOKIE, JSON, HEADER)
# Which kinds each setting accepts.
SOURCES = (COOKIE, JSON)
ACCESS_OUT = (COOKIE, BEARER, HEADER)
REFRESH_OUT = (COOKIE, BEARER, HEADER, JSON)
# RFC 9110 §5.1 / RFC 6265 §4.1.1: header and cookie names are tokens.
TOKEN_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


@dataclass(frozen=True)
class Place:
    """Where a token is found or put: a named cookie, a JSON path, a header, or Bearer."""

    kind: str
    name: str = ""

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}" if self.name else self.kind

    @classmethod
    def parse(cls, value: str, *, setting: str, kinds: Iterable[str]) -> "Place":
        """Return the place `value` names; ImproperlyConfigured names `setting` if it is none."""
        kinds = tuple(kinds)
        kind, _, name = str(value).strip().partition(":")
        kind, name = kind.strip().lower(), name.strip()
        written = " or ".join(f"`{k}:<name>`" if k in NAMED else f"`{k}`" for k in kinds)
        if kind not in kinds or (kind in NAMED) != bool(name):
            raise ImproperlyConfigured(f"{setting} is {value!r}; write {written}.")
        if kind == HEADER and name.lower() in ("cookie", "content-type", "content-length"):
            raise ImproperlyConfigured(f"{setting} names the {name} header, which the app sets.")
        if kind in (HEADER, COOKIE) and not TOKEN_NAME.match(name):
            raise ImproperlyConfigured(f"{setting}: {name!r} is not a {kind} name.")
        if kind == JSON and not all(name.split(".")):
            raise ImproperlyConfigured(f"{setting}: {name!r} has an empty step; write a.b.c.")
        return cls(kind, name)

    def header(self) -> str | None:
        """The request header this place fills, if it is one (for conflicts)."""
        if self.kind == BEARER:
            return "authorization"
        if self.kind == HEADER:
            return self.name.lower()
        return None


@dataclass(frozen=True)
class BackendShape:
    """How tokens come from and go to the backend, and how a wrong password looks."""

    access_from: Place
    refresh_from: Place
    access_to: Place
    refresh_to: Place
    logout_access_to: Place
    logout_refresh_to: Place
    invalid_login_statuses: frozenset[int]

    @classmethod
    def from_settings(cls, conf) -> "BackendShape":
        """Read the shape from accounts.conf, AUTH_BACKEND_TOKEN_TRANSPORT filling what is unset.

        :raises ImproperlyConfigured: a place that cannot be parsed, or a
            sign-in status that cannot mean a wrong password.
        """
        transport = conf.token_transport
        body = transport == "body"
        access_from = _place(
            conf.access_token_from,
            f"json:{conf.body_access_field}" if body else f"cookie:{conf.access_cookie}",
            "AUTH_ACCESS_TOKEN_FROM",
            SOURCES,
        )
        refresh_from = _place(
            conf.refresh_token_from,
            f"json:{conf.body_refresh_field}" if body else f"cookie:{conf.refresh_cookie}",
            "AUTH_REFRESH_TOKEN_FROM",
            SOURCES,
        )
        # Unless told: a token goes back the way it came, an access token from
        # JSON (or with the `bearer` shorthand) as `Authorization: Bearer`.
        access_default = (
            "bearer" if access_from.kind == JSON or transport == "bearer" else str(access_from)
        )
        access_to = _place(conf.access_token_to, access_default, "AUTH_ACCESS_TOKEN_TO", ACCESS_OUT)
        refresh_to = _place(
            conf.refresh_token_to, str(refresh_from), "AUTH_REFRESH_TOKEN_TO", REFRESH_OUT
        )
        logout_access_to = _place(
            conf.logout_access_token_to,
            str(access_to),
            "AUTH_LOGOUT_ACCESS_TOKEN_TO",
            (*ACCESS_OUT, NONE),
        )
        logout_refresh_default = str(refresh_to)
        if refresh_to.header() and refresh_to.header() == logout_access_to.header():
            # One Authorization header: a logout guarded like any other call takes the access token.
            logout_refresh_default = NONE
        logout_refresh_to = _place(
            conf.logout_refresh_token_to,
            logout_refresh_default,
            "AUTH_LOGOUT_REFRESH_TOKEN_TO",
            (*REFRESH_OUT, NONE),
        )
        try:
            statuses = frozenset(int(s) for s in conf.login_invalid_statuses_list)
        except (TypeError, ValueError) as exc:
            raise ImproperlyConfigured(
                f"AUTH_LOGIN_INVALID_STATUSES must list HTTP statuses "
                f"(got {conf.login_invalid_statuses_list!r})."
            ) from exc
        if not statuses or any(s < 400 or s >= 500 or s == 429 for s in statuses):
            raise ImproperlyConfigured(
                "AUTH_LOGIN_INVALID_STATUSES must list 4xx statuses other than 429 "
                f"(got {sorted(statuses)}); 429 always means throttled."
            )
        return cls(
            access_from=access_from,
            refresh_from=refresh_from,
            access_to=access_to,
            refresh_to=refresh_to,
            logout_access_to=logout_access_to,
            logout_refresh_to=logout_refresh_to,
            invalid_login_statuses=statuses,
        )

    def conflicts(self) -> list[str]:
        """Settings that would send both tokens of the sign-out call in one header or cookie."""
        access, refresh = self.logout_access_to, self.logout_refresh_to
        same_header = access.header() and access.header() == refresh.header()
        same_cookie = access.kind == refresh.kind == COOKIE and access.name == refresh.name
        if not (same_header or same_cookie):
            return []
        return [
            f"on sign-out both tokens would go out as {access}: set "
            "AUTH_LOGOUT_ACCESS_TOKEN_TO or AUTH_LOGOUT_REFRESH_TOKEN_TO to `none`"
        ]


def _place(value: str, default: str, setting: str, kinds: tuple[str, ...]) -> Place:
    return Place.parse(value or default, setting=setting, kinds=kinds)


# --- JSON paths -------------------------------------------------------------

MISSING = object()


def lookup(data: Any, path: str) -> Any:
    """Return the value at dotted `path` in nested JSON objects, or MISSING.

    A list index may be a path step (`data.0.token`).
    """
    value = data
    for step in path.split("."):
        if isinstance(value, Mapping) and step in value:
            value = value[step]
        elif isinstance(value, list) and step.isdigit() and int(step) < len(value):
            value = value[int(step)]
        else:
            return MISSING
    return value


def put(data: dict, path: str, value: Any) -> dict:
    """Set `value` at dotted `path` in `data` (a copy), making the objects on the way."""
    head, _, rest = path.partition(".")
    copied = dict(data)
    if rest:
        inner = copied.get(head)
        copied[head] = put(inner if isinstance(inner, dict) else {}, rest, value)
    else:
        copied[head] = value
    return copied


def paths(data: Any, prefix: str = "", *, depth: int = 4) -> Iterable[tuple[str, Any]]:
    """Yield every (dotted path, value) in nested JSON objects, leaves and objects alike."""
    if not isinstance(data, Mapping) or depth == 0:
        return
    for key, value in data.items():
        path = f"{prefix}{key}"
        yield path, value
        yield from paths(value, f"{path}.", depth=depth - 1)


# --- roles --------------------------------------------------------------------


class UnreadableRoles(ValueError):
    """A roles value of no known shape; the message says what was found (no values)."""


def role_names(value: Any, *, name_key: str = "name") -> tuple[str, ...]:
    """Return the role names in any of the shapes backends give them.

    A list of names (`["admin"]`), one name (`"admin"`, or `"a,b"` as a list),
    an object with a name (`{"id": 1, "name": "Admin"}`), a list of such
    objects, or a map of name to true (`{"super": true, "guest": false}`).

    :raises UnreadableRoles: anything else (the message names what it found).
    """
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, Mapping):
        named = value.get(name_key)
        if isinstance(named, str):
            return (named,) if named else ()
        if value and all(isinstance(v, bool) for v in value.values()):
            return tuple(str(k) for k, v in value.items() if v)
        if not value:
            return ()
        raise UnreadableRoles(
            f"an object {outline(value)} with no {name_key!r} name and not a map of role to true"
        )
    if isinstance(value, list):
        names = []
        for item in value:
            if isinstance(item, str):
                names.append(item)
            elif isinstance(item, Mapping) and isinstance(item.get(name_key), str):
                names.append(item[name_key])
            else:
                raise UnreadableRoles(f"a list holding {outline(item)}")
        return tuple(names)
    raise UnreadableRoles(f"{outline(value)}")


def roles_candidates(data: Any) -> list[str]:
    """Paths in a `/users/me` answer that look like roles, best first (for advice)."""
    found = []
    for path, value in paths(data):
        last = path.rsplit(".", 1)[-1].lower()
        if "role" not in last and last not in ("groups", "permissions", "authorities"):
            continue
        try:
            if role_names(value):
                found.append(path)
        except UnreadableRoles:
            continue
    return sorted(found, key=lambda p: (p.count("."), "role" not in p.lower(), p))


# --- what did not fit, for the operator (the admin health page) -------------

REPORT_KEY = "accounts:shape-mismatch"
REPORT_FOR = 24 * 3600


def report(exc: Exception) -> None:
    """Keep the latest ShapeMismatch for the health page (its message holds no values)."""
    from .exceptions import ShapeMismatch

    if not isinstance(exc, ShapeMismatch):
        return
    try:
        cache.set(
            REPORT_KEY, {"at": time.time(), "message": str(exc), "setting": exc.setting}, REPORT_FOR
        )
    except Exception:  # noqa: BLE001 - a broken cache must not fail the request
        logger.warning("The backend shape mismatch could not be kept for the health page")


def reported() -> dict | None:
    """The latest mismatch `report` kept in the last day: `at`, `message`, `setting`."""
    try:
        found = cache.get(REPORT_KEY)
    except Exception:  # noqa: BLE001
        return None
    return found if isinstance(found, dict) else None
