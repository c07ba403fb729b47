"""The sign-in's token pair, sealed in its server-side session.

Every session signed in through the auth API keeps its current pair here,
next to its `TokenRecord` and saved with it, in both storage modes
(AUTH_TOKEN_STORAGE):

- `session`: this is where the request's tokens come from; the browser holds
  only `sessionid` and `csrftoken`.
- `cookies`: the browser's cookies are the request's tokens (checked against
  the record); the sealed copy lets another of the user's browsers, an admin
  or a back-channel sign-out revoke this sign-in at the backend
  (accounts/devices.py), and a switch to `session` needs nothing from the
  browser.

Sealed with Fernet under a key derived by HKDF from SECRET_KEY; keys derived
from SECRET_KEY_FALLBACKS still open it, so rotating the secret signs nobody
out, and the next save seals it under the new key.
"""

import json

from cryptography.fernet import InvalidToken, MultiFernet
from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase

from .client import Tokens, usable_token
from .record import derived_fernet

SESSION_KEY = "_auth_token_vault"
_INFO = b"accounts.vault.tokens"


def _fernet() -> MultiFernet:
    secrets = (settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", ()))
    return MultiFernet([derived_fernet(secret.encode(), info=_INFO) for secret in secrets])


def seal(tokens: Tokens) -> str:
    """Return `tokens` encrypted under the current SECRET_KEY."""
    plain = json.dumps({"access": tokens.access, "refresh": tokens.refresh})
    return _fernet().encrypt(plain.encode()).decode("ascii")


def unseal(value) -> Tokens | None:
    """Return the pair sealed in `value`, or None if absent, unreadable or under an unknown key."""
    if not isinstance(value, str) or not value:
        return None
    try:
        data = json.loads(_fernet().decrypt(value.encode("ascii")))
    except (InvalidToken, UnicodeError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    access, refresh = usable_token(data.get("access")), usable_token(data.get("refresh"))
    tokens = Tokens(access=access, refresh=refresh)
    return tokens if tokens.refresh else None


def tokens_of(session: SessionBase) -> Tokens | None:
    """Return the pair a session holds (any session: this request's or another's), if any."""
    return unseal(session.get(SESSION_KEY))
