"""Token values: a pair (`Tokens`), what may be one (`usable_token`), and what the app may
read of an access token without the backend's key (its claims, its expiry).

No HTTP here: the client (accounts/client.py), the vault and the state all use these.
"""

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import jwt

from .conf import conf
from .cookies import BackendCookie

# RFC 6265 §4.1.1 cookie-octets: what may go into a Cookie header (and what
# `requests` can encode). Anything else is treated as no token at all.
TOKEN_VALUE = re.compile(r"^[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]{1,8192}$")


def usable_token(value: str | None) -> str | None:
    """Return `value` if it can be a token in a Cookie or Authorization header, else None."""
    if value and TOKEN_VALUE.match(value):
        return value
    return None


@dataclass(frozen=True, repr=False)
class Tokens:
    """A pair of token values (either may be missing). Its repr never shows them."""

    access: str | None = None
    refresh: str | None = None

    def __repr__(self) -> str:
        shown = {k: "<hidden>" if v else None for k, v in self.__dict__.items()}
        return f"Tokens(access={shown['access']}, refresh={shown['refresh']})"

    def updated_by(self, cookies: list[BackendCookie]) -> "Tokens":
        """Return these tokens with whatever `cookies` set or delete applied."""
        access, refresh = self.access, self.refresh
        for cookie in cookies:
            value = None if cookie.deletes else usable_token(cookie.value)
            if cookie.name == conf.access_cookie:
                access = value
            elif cookie.name == conf.refresh_cookie:
                refresh = value
        return Tokens(access=access, refresh=refresh)



def access_token_claims(token: str | None) -> dict | None:
    """Return the unverified claims of a JWT access token, or None if it is not one.

    The signature is not checked: the backend's key is not the app's, and the
    only use of these claims is to decide *when* to refresh or to show expiry.
    Nothing here grants access; the backend verifies every token it receives.
    """
    if not token:
        return None
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return None
    return claims if isinstance(claims, dict) else None


def access_token_expiry(token: str | None) -> datetime | None:
    """Return when a JWT access token expires, or None if that cannot be read."""
    claims = access_token_claims(token)
    exp = claims.get("exp") if claims else None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    try:
        return datetime.fromtimestamp(exp, UTC)
    except (OverflowError, OSError, ValueError):
        return None
