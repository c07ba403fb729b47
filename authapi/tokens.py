"""Access and refresh tokens of the reference API.

Access tokens are HS256 JWTs carrying `exp`, the user (`sub`) and the sign-in
they belong to (`sid`, the token family). Refresh tokens are random strings
(256 bits base64url, or 80 hex digits with AUTHAPI_REFRESH_FORMAT=hex); only
their SHA-256 is stored. Every refresh spends the presented token and issues a
new one in the same family; presenting a spent token again is taken as theft
and revokes the family (RFC 9700 §4.14.2).
"""

import hashlib
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta

import jwt
from django.db import transaction
from django.utils import timezone

from . import faults, shapes, stats
from .conf import JWT_ALGORITHM, api_settings
from .models import ApiUser, RefreshToken, TokenFamily

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    refresh_token: str | None  # None: a refresh without rotation keeps the old one


def now() -> float:
    """The API's clock: real time plus AUTHAPI_CLOCK_OFFSET (a backend whose clock is off)."""
    return time.time() + api_settings.clock_offset


class TokenRejected(Exception):
    """A token that must be answered with 401; `reason` is safe to log."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def hash_token(raw: str) -> str:
    """Return the stored form of a refresh token."""
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def _access_token(user: ApiUser, family: TokenFamily) -> str:
    issued_at = int(now())
    claims = {
        "sub": str(user.pk),
        "sid": family.pk,
        "email": user.email,
        "roles": shapes.role_names(user.roles),
        "iat": issued_at,
        "exp": issued_at + faults.access_ttl(),
        "jti": secrets.token_urlsafe(9),
        "typ": "access",
    }
    return jwt.encode(claims, api_settings.jwt_secret, algorithm=JWT_ALGORITHM)


def _new_refresh_token() -> str:
    """256 random bits in base64url, or (AUTHAPI_REFRESH_FORMAT=hex) 320 in 80 hex digits."""
    if api_settings.refresh_format == "hex":
        return secrets.token_hex(40)
    return secrets.token_urlsafe(32)


def _issue(family: TokenFamily) -> IssuedTokens:
    raw = _new_refresh_token()
    RefreshToken.objects.create(
        family=family,
        token_hash=hash_token(raw),
        expires_at=timezone.now() + timedelta(seconds=api_settings.refresh_ttl),
    )
    return IssuedTokens(access_token=_access_token(family.user, family), refresh_token=raw)


def sign_in(user: ApiUser) -> IssuedTokens:
    """Start a new token family for `user` and return its first pair."""
    with transaction.atomic():
        family = TokenFamily.objects.create(user=user)
        return _issue(family)


def rotate(raw_refresh: str) -> IssuedTokens:
    """Spend `raw_refresh` and return the next pair of its family.

    :raises TokenRejected: unknown, expired, revoked or already spent token;
        a spent one revokes its whole family first.
    """
    now = timezone.now()
    with transaction.atomic():
        token = (
            RefreshToken.objects.select_related("family__user")
            .filter(token_hash=hash_token(raw_refresh))
            .first()
        )
        if token is None:
            reason = "unknown"
        elif token.family.revoked_at is not None:
            reason = "revoked"
        elif not token.family.user.is_active:
            reason = "inactive"
        elif token.expires_at <= now:
            reason = "expired"
        else:
            # The conditional UPDATE is the atomic claim: of two concurrent
            # refreshes with one token, exactly one sees a row count of 1.
            if not api_settings.rotate_refresh:
                # A backend that does not rotate: the same refresh token, a new access token.
                return IssuedTokens(_access_token(token.family.user, token.family), None)
            claimed = RefreshToken.objects.filter(pk=token.pk, spent_at__isnull=True).update(
                spent_at=now
            )
            if claimed:
                return _issue(token.family)
            # Counted whether or not the API acts on it: tests check the app never does this.
            stats.bump("spent_presented")
            if not api_settings.reuse_detection:
                # A naive backend accepts a spent token until it expires.
                return _issue(token.family)
            reason = "reused"
            TokenFamily.objects.filter(pk=token.family_id).update(
                revoked_at=now, revoked_reason="reuse"
            )
    if reason == "reused":
        stats.bump("reuse_detected")
        logger.warning(
            "Refresh token reuse detected: family %s of user %s revoked",
            token.family_id,
            token.family.user_id,
        )
    raise TokenRejected(reason)


def revoke(raw_refresh: str, *, reason: str = "logout") -> bool:
    """Revoke the family of `raw_refresh`; return whether one was revoked."""
    family_ids = RefreshToken.objects.filter(token_hash=hash_token(raw_refresh)).values("family_id")
    return bool(
        TokenFamily.objects.filter(pk__in=family_ids, revoked_at__isnull=True).update(
            revoked_at=timezone.now(), revoked_reason=reason
        )
    )


def revoke_family(family_id: int, *, reason: str = "logout") -> bool:
    """Revoke one family by id; return whether it was live."""
    return bool(
        TokenFamily.objects.filter(pk=family_id, revoked_at__isnull=True).update(
            revoked_at=timezone.now(), revoked_reason=reason
        )
    )


def revoke_user(user: ApiUser, *, reason: str = "admin") -> int:
    """Revoke every live family of `user`; return how many were live."""
    return TokenFamily.objects.filter(user=user, revoked_at__isnull=True).update(
        revoked_at=timezone.now(), revoked_reason=reason
    )


def access_expires_ms(raw_access: str) -> int:
    """The `exp` of an access token this API just signed, in ms since the epoch."""
    claims = jwt.decode(raw_access, options={"verify_signature": False})
    return int(claims["exp"]) * 1000


def decode_access(raw_access: str) -> dict:
    """Return the verified claims of an access token.

    :raises TokenRejected: bad signature, wrong type, missing claims, expired.
    """
    try:
        claims = jwt.decode(
            raw_access,
            api_settings.jwt_secret,
            algorithms=[JWT_ALGORITHM],
            # `exp` is checked below on the API's own clock; `iat` may be ahead of the real one.
            options={
                "require": ["exp", "iat", "sub", "sid"],
                "verify_exp": False,
                "verify_iat": False,
            },
        )
    except jwt.InvalidTokenError as exc:
        raise TokenRejected("invalid") from exc
    if not isinstance(claims["exp"], int | float) or claims["exp"] <= now():
        raise TokenRejected("expired")
    if claims.get("typ") != "access" or not str(claims["sub"]).isdigit():
        raise TokenRejected("invalid")
    if not isinstance(claims["sid"], int):
        raise TokenRejected("invalid")
    return claims


def user_for_access(raw_access: str) -> ApiUser:
    """Return the active user whose live sign-in issued `raw_access`.

    :raises TokenRejected: as `decode_access`, or the family was revoked.
    """
    claims = decode_access(raw_access)
    user = ApiUser.objects.filter(
        pk=claims["sub"],
        is_active=True,
        families__pk=claims["sid"],
        families__revoked_at__isnull=True,
    ).first()
    if user is None:
        raise TokenRejected("revoked")
    return user
