"""Write token cookies the way Express's `res.cookie()` does.

A NestJS backend sends one `Set-Cookie` header per cookie, attribute names in
mixed case, `Max-Age` first and an `Expires` date that contains a comma:

    access_token=eyJ…; Max-Age=1800; Path=/;
        Expires=Fri, 27 Nov 2026 10:31:00 GMT; HttpOnly; Secure; SameSite=None

(one line on the wire). The refresh cookie's `Path` is
AUTHAPI_REFRESH_COOKIE_PATH, as a backend that scopes it to its refresh
endpoint writes it (`res.cookie('refresh_token', t, { path: '/auth/refresh' })`);
the access cookie keeps `Path=/`. With AUTHAPI_COOKIE_MAX_AGE=False there is
no `Max-Age`, only `Expires` (also when clearing: the epoch), as a backend
passing `expires` instead of `maxAge` writes them.
Python's Morsel writes lower-case `expires` in another order, so the reference
API renders its own; the app under test must cope with the real thing.
"""

from http.cookies import Morsel

from django.http import HttpResponse
from django.utils.http import http_date

from . import faults
from .conf import api_settings
from .tokens import IssuedTokens, now

EPOCH = "Thu, 01 Jan 1970 00:00:00 GMT"


class ExpressMorsel(Morsel):
    """A Morsel that renders in Express's order and casing."""

    def output(self, attrs=None, header="Set-Cookie:"):
        # Morsel puts a space after the header name even when Django's WSGI
        # handler passes an empty one; send the value as Express does.
        return f"{header} {self.OutputString()}".strip()

    def OutputString(self, attrs=None):  # noqa: N802 - Morsel's own name
        parts = [f"{self.key}={self.coded_value}"]
        if self["max-age"] != "":
            parts.append(f"Max-Age={self['max-age']}")
        if self["domain"]:
            parts.append(f"Domain={self['domain']}")
        parts.append(f"Path={self['path'] or '/'}")
        if self["expires"]:
            parts.append(f"Expires={self['expires']}")
        if self["httponly"]:
            parts.append("HttpOnly")
        if self["secure"]:
            parts.append("Secure")
        if self["samesite"]:
            parts.append(f"SameSite={self['samesite']}")
        return "; ".join(parts)


def _path(name: str) -> str:
    """Return the `Path` a token cookie is written (and cleared) with."""
    return api_settings.refresh_cookie_path if name == api_settings.refresh_cookie else "/"


def _set(response: HttpResponse, name: str, value: str, *, max_age: int, expires: str) -> None:
    morsel = ExpressMorsel()
    morsel.set(name, value, value)
    if api_settings.cookie_max_age:
        morsel["max-age"] = max_age
    morsel["path"] = _path(name)
    morsel["expires"] = expires
    morsel["httponly"] = True
    morsel["secure"] = api_settings.cookie_secure
    morsel["samesite"] = api_settings.cookie_samesite
    if api_settings.cookie_domain:
        morsel["domain"] = api_settings.cookie_domain
    response.cookies[name] = morsel


def set_token_cookies(response: HttpResponse, tokens: IssuedTokens, *, access=True) -> None:
    """Attach the tokens as Express-style `Set-Cookie` headers, one per cookie.

    A refresh without rotation has no new refresh token: only the access cookie.
    `access=False` (mixed transport): the refresh cookie only.
    """
    issued_at = now()
    cookies = [(api_settings.refresh_cookie, tokens.refresh_token, api_settings.refresh_ttl)]
    if access:
        cookies.insert(0, (api_settings.access_cookie, tokens.access_token, faults.access_ttl()))
    for name, value, ttl in cookies:
        if value is not None:
            _set(response, name, value, max_age=ttl, expires=http_date(issued_at + ttl))


def clear_token_cookies(response: HttpResponse, *, access=True) -> None:
    """Tell the client to drop both tokens (`Max-Age=0` and an epoch `Expires`).

    Each is cleared with the `Path` it was set with: a browser only replaces a
    cookie of the same name, domain and path. `access=False` (mixed
    transport): the refresh cookie only.
    """
    names = [api_settings.access_cookie] if access else []
    for name in (*names, api_settings.refresh_cookie):
        _set(response, name, "", max_age=0, expires=EPOCH)
