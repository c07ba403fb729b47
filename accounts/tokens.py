"""Read what the app may read of a token without the backend's key: its expiry."""

from datetime import UTC, datetime

import jwt


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
