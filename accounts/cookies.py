"""Relay the auth backend's token cookies onto the app's own responses.

`requests` joins repeated headers with ", " and every `Expires` date holds a
comma, so the joined string cannot be split back. Each
`Set-Cookie` header is read separately from urllib3's raw headers and parsed
on its own, attribute names case-insensitively (RFC 6265 §5.2).

Only the configured token cookies are relayed, never the app's own session or
CSRF cookies. `Domain` is dropped (the cookies now belong to the app's origin)
unless AUTH_COOKIE_DOMAIN is set; `Secure` and `SameSite` come from settings;
`HttpOnly` is always set, so page scripts can never read a token.
"""

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from django.conf import settings
from django.http import HttpResponseBase

from .conf import conf

logger = logging.getLogger(__name__)

# RFC 6265 §4.1.1: a cookie name is an RFC 2616 token; a value is cookie-octets.
COOKIE_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
COOKIE_VALUE = re.compile(r'^"?[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]*"?$')
MAX_COOKIE_LENGTH = 8192
# Browsers keep a cookie of at most 4096 bytes, name, value and attributes
# together (RFC 6265 §6.1's minimum, and what Chromium and Firefox enforce);
# a longer one is dropped without a word.
BROWSER_LIMIT = 4096


class CookieParseError(ValueError):
    """A Set-Cookie header that cannot be used; the message never holds its value."""


@dataclass(frozen=True, repr=False)
class BackendCookie:
    """One parsed `Set-Cookie` header of the auth backend (its repr hides the value)."""

    name: str
    value: str
    max_age: int | None = None
    expires: datetime | None = None
    path: str = "/"

    def __repr__(self) -> str:
        return f"BackendCookie(name={self.name!r}, value=<hidden>, max_age={self.max_age!r})"

    @property
    def deletes(self) -> bool:
        """True when the header tells the client to drop the cookie."""
        if self.max_age is not None:
            return self.max_age <= 0
        return self.expires is not None and self.expires <= datetime.now(UTC)

    @property
    def expires_at(self) -> datetime | None:
        """When the cookie expires, from Max-Age (which wins) or Expires."""
        if self.max_age is not None:
            return datetime.fromtimestamp(datetime.now(UTC).timestamp() + self.max_age, UTC)
        return self.expires


def _parse_expires(raw: str) -> datetime:
    try:
        parsed = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError) as exc:
        raise CookieParseError("unreadable Expires date") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_set_cookie(header: str) -> BackendCookie:
    """Return the cookie one `Set-Cookie` header sets.

    :raises CookieParseError: no name, bad characters, bad Max-Age/Expires.
    """
    if len(header) > MAX_COOKIE_LENGTH:
        raise CookieParseError("header too long")
    pair, *attributes = header.split(";")
    name, sep, value = pair.partition("=")
    name, value = name.strip(), value.strip()
    if not sep or not COOKIE_NAME.match(name):
        raise CookieParseError("missing or invalid cookie name")
    if not COOKIE_VALUE.match(value):
        raise CookieParseError(f"invalid characters in the value of {name}")
    fields = {"name": name, "value": value.strip('"')}
    for attribute in attributes:
        key, _, attr_value = attribute.partition("=")
        key, attr_value = key.strip().lower(), attr_value.strip()
        if key == "max-age":
            if not re.fullmatch(r"-?\d{1,12}", attr_value):
                raise CookieParseError(f"invalid Max-Age on {name}")
            fields["max_age"] = int(attr_value)
        elif key == "expires":
            fields["expires"] = _parse_expires(attr_value)
        elif key == "path" and attr_value.startswith("/"):
            fields["path"] = attr_value
        # Domain, Secure, SameSite and unknown attributes are the app's to decide.
    return BackendCookie(**fields)


def parse_set_cookies(headers: Iterable[str]) -> list[BackendCookie]:
    """Parse every header, skipping (and logging, without values) the unusable ones."""
    cookies = []
    for header in headers:
        try:
            cookies.append(parse_set_cookie(header))
        except CookieParseError as exc:
            logger.warning("Skipped a Set-Cookie header from the auth backend: %s", exc)
    return cookies


def merge(first: list[BackendCookie], later: list[BackendCookie]) -> list[BackendCookie]:
    """Later cookies win by name (a chained refresh may renew only the access token)."""
    merged = {c.name: c for c in first}
    merged.update({c.name: c for c in later})
    return list(merged.values())


def _relayable(cookie: BackendCookie) -> bool:
    protected = {settings.SESSION_COOKIE_NAME, settings.CSRF_COOKIE_NAME}
    if cookie.name in protected or cookie.name not in conf.token_cookies:
        logger.warning("Refused to relay the auth backend's cookie %r", cookie.name)
        return False
    return True


def write(response: HttpResponseBase, cookies: Iterable[BackendCookie]) -> None:
    """Set or delete each relayable token cookie on `response`, at AUTH_COOKIE_PATH.

    The backend's own `Path` is not kept: a refresh cookie scoped to
    `/auth/refresh` would never come back to the app's pages.
    """
    for cookie in filter(_relayable, cookies):
        if cookie.deletes:
            delete(response, [cookie.name])
            continue
        _set(response, cookie)


def _set(response: HttpResponseBase, cookie: BackendCookie) -> None:
    response.set_cookie(
        cookie.name,
        cookie.value,
        max_age=cookie.max_age,
        expires=None if cookie.max_age is not None else cookie.expires,
        path=conf.cookie_path,
        domain=conf.cookie_domain,
        secure=conf.cookie_secure,
        httponly=True,
        samesite=conf.cookie_samesite,
    )


def relayed_size(cookie: BackendCookie) -> int:
    """Return the bytes of the cookie `write` would set for `cookie`, attributes included."""
    probe = HttpResponseBase()
    _set(probe, cookie)
    return len(probe.cookies[cookie.name].OutputString())


def too_large(cookies: Iterable[BackendCookie]) -> list[tuple[str, int]]:
    """Return (name, size) of each token cookie `write` would set that a browser would drop."""
    sizes = [
        (c.name, relayed_size(c)) for c in cookies if c.name in conf.token_cookies and not c.deletes
    ]
    return [(name, size) for name, size in sizes if size > BROWSER_LIMIT]


def delete(response: HttpResponseBase, names: Iterable[str], paths: Iterable[str] = ()) -> None:
    """Delete cookies `names` at AUTH_COOKIE_PATH, `/` and every path in `paths`.

    A cookie lives per (name, domain, path): deleting it at one path leaves a
    copy set at another, so sign-out deletes at each path one may have used.
    """
    for name in names:
        response.delete_cookie(
            name, path=conf.cookie_path, domain=conf.cookie_domain, samesite=conf.cookie_samesite
        )
        for path in dict.fromkeys(("/", *paths)):
            if path == conf.cookie_path:
                continue
            # response.cookies holds one morsel per name; a morsel stored under
            # another key still renders as `name=…` in its own Set-Cookie header.
            extra = response.cookies[name].copy()
            extra["path"] = path
            response.cookies[f"{name} {path}"] = extra
