"""What the server knows about a sign-in's tokens, kept in the Django session.

The browser holds the tokens; the session holds `TokenRecord`: the backend
user id, keyed hashes of the current pair, when the access token expires as
issued (never as a cookie later claims), when the user was last re-read from
the backend, and a random `binding` that ties refresh outcomes to this
session. `accounts.state.TokenState` compares every request's cookies with it.
"""

import base64
import secrets
import time
from dataclasses import asdict, dataclass, replace

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.utils.crypto import constant_time_compare, salted_hmac

from . import clock
from .conf import conf
from .cookies import BackendCookie
from .tokens import access_token_claims

SESSION_KEY = "_auth_token_record"
# Where a sign-in's pair is kept (AUTH_TOKEN_STORAGE): the browser's cookies,
# or the session itself (accounts/vault.py).
COOKIES, SESSION = "cookies", "session"
_HASH_SALT = "accounts.record.token"


def token_hash(value: str, *, secret: str | None = None) -> str:
    """Return the keyed hash of a token value (HMAC-SHA256 under SECRET_KEY)."""
    return salted_hmac(_HASH_SALT, value, secret=secret, algorithm="sha256").hexdigest()[:40]


def derived_fernet(material: bytes, *, info: bytes, salt: bytes | None = None) -> Fernet:
    """Return a Fernet whose key is HKDF-SHA256 over `material`: one key per purpose (`info`)."""
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(material)
    return Fernet(base64.urlsafe_b64encode(key))


def hash_matches(value: str | None, stored: str | None) -> bool:
    """Return whether `value` hashes to `stored` under SECRET_KEY or one of its fallbacks."""
    if not value or not stored:
        return False
    for secret in (settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", ())):
        if constant_time_compare(token_hash(value, secret=secret), stored):
            return True
    return False


def access_expiry(cookie: BackendCookie | None, token: str | None) -> float | None:
    """Return the earliest of the cookie's and the JWT's expiry (seconds), if either is known."""
    known = []
    if cookie is not None and cookie.expires_at is not None:
        known.append(cookie.expires_at.timestamp())
    claims = access_token_claims(token)
    exp = claims.get("exp") if claims else None
    if isinstance(exp, int | float) and not isinstance(exp, bool):
        known.append(clock.local(float(exp)))  # written on the backend's clock
    return min(known) if known else None


@dataclass(frozen=True)
class TokenRecord:
    """The session's record of its token pair (no token values, only keyed hashes)."""

    user_id: str
    binding: str
    access_hash: str | None
    refresh_hash: str
    access_expires_at: float | None
    access_lifetime: float | None
    refresh_expires_at: float | None
    validated_at: float
    round: int = 0
    generation: int = 0
    renewed_at: float = 0.0  # when this pair was recorded (sign-in or refresh)
    cookie_paths: tuple[str, ...] = ()
    storage: str = COOKIES

    @classmethod
    def issue(
        cls,
        *,
        user_id: str,
        access: str | None,
        refresh: str,
        cookies: list[BackendCookie],
        storage: str = COOKIES,
    ) -> "TokenRecord":
        """Return the record of a new sign-in's pair."""
        now = time.time()
        record = cls(
            user_id=user_id,
            binding=secrets.token_urlsafe(16),
            access_hash=None,
            refresh_hash="",
            access_expires_at=None,
            access_lifetime=None,
            refresh_expires_at=None,
            validated_at=now,
            storage=storage,
        )
        return record.renewed(access=access, refresh=refresh, cookies=cookies, generation=0)

    def renewed(
        self,
        *,
        access: str | None,
        refresh: str,
        cookies: list[BackendCookie],
        round_: int | None = None,
        generation: int | None = None,
    ) -> "TokenRecord":
        """Return this record moved on to a new pair (one generation later).

        `round_` is how many refreshes the new refresh token has answered
        already (above 0 only with a backend that does not rotate).
        """
        now = time.time()
        by_name = {c.name: c for c in cookies if not c.deletes}
        access_cookie = by_name.get(conf.access_cookie)
        refresh_cookie = by_name.get(conf.refresh_cookie)
        access_expires = access_expiry(access_cookie, access)
        refresh_hash = token_hash(refresh)
        same_refresh = refresh_hash == self.refresh_hash
        # Without a refresh cookie to read, keep the old expiry: a successor
        # lives at least as long as the token it replaced.
        refresh_expires = (
            refresh_cookie.expires_at.timestamp()
            if refresh_cookie is not None and refresh_cookie.expires_at is not None
            else self.refresh_expires_at
        )
        paths = set(self.cookie_paths) | {c.path for c in cookies if c.path != "/"}
        return replace(
            self,
            access_hash=token_hash(access) if access else None,
            refresh_hash=refresh_hash,
            access_expires_at=access_expires,
            access_lifetime=(access_expires - now) if access_expires else None,
            refresh_expires_at=refresh_expires,
            round=round_ if round_ is not None else (self.round + 1 if same_refresh else 0),
            generation=self.generation + 1 if generation is None else generation,
            renewed_at=now,
            cookie_paths=tuple(sorted(paths)),
        )

    def refresh_due(self, *, now: float, leeway: float) -> bool:
        """Return whether the access token, as issued, expires within the leeway.

        The leeway is at most half the token's lifetime, so short-lived tokens
        do not refresh on every request.
        """
        if self.access_hash is None:
            return True
        if self.access_expires_at is None:
            return False  # not a JWT and no expiry: refresh on the backend's 401
        if self.access_lifetime:
            leeway = min(leeway, self.access_lifetime / 2)
        return self.access_expires_at - now <= leeway

    def access_expired(self, *, now: float) -> bool:
        """Return whether the access token, as issued, has expired."""
        if self.access_hash is None:
            return True
        return self.access_expires_at is not None and self.access_expires_at <= now

    def keep_outcome_for(self) -> int:
        """Return how long a refresh outcome of this pair must be kept: the refresh token's life."""
        if self.refresh_expires_at is not None:
            remaining = self.refresh_expires_at - time.time()
        else:
            remaining = settings.SESSION_COOKIE_AGE
        return int(max(remaining, 0)) + 60

    def as_session_value(self) -> dict:
        return {**asdict(self), "cookie_paths": list(self.cookie_paths)}

    @classmethod
    def from_session_value(cls, value) -> "TokenRecord | None":
        """Return the record stored in a session, or None if absent or unreadable."""
        if not isinstance(value, dict):
            return None
        try:
            record = cls(**{**value, "cookie_paths": tuple(value.get("cookie_paths", ()))})
        except TypeError:
            return None
        if not (record.refresh_hash and record.binding) or record.storage not in (COOKIES, SESSION):
            return None
        return record
