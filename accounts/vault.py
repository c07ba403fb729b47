"""The sign-in's token pair, sealed in its server-side session.

Every session signed in through the auth API keeps its current pair here,
next to its `TokenRecord` and saved with it, in both storage modes
(AUTH_TOKEN_STORAGE):

- `session`: this is where the request's tokens come from; the browser holds
  only `sessionid` and `csrftoken`.
- `cookies`: the browser's cookies are the request's tokens (checked against
  the record); the sealed copy lets another of the user's browsers, an admin
  or a back-channel sign-out revoke this sign-in at the backend
  (accounts/usersessions/signins.py), and a switch to `session` needs nothing from the
  browser.

Sealed with Fernet under a key derived by HKDF from SECRET_KEY; keys derived
from SECRET_KEY_FALLBACKS still open it, so rotating the secret signs nobody
out, and the next save seals it under the new key. `Sealer` is the same seal
for any purpose (accounts/revocations.py keeps its queue with one), each
purpose with keys of its own.
"""

import functools
import json

from cryptography.fernet import InvalidToken, MultiFernet
from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase

from .record import derived_fernet
from .tokens import Tokens, usable_token

SESSION_KEY = "_auth_token_vault"


@functools.lru_cache(maxsize=8)
def _keys(info: bytes, secrets: tuple[str, ...]) -> MultiFernet:
    # Derived once per secret: a signed-in request in session mode opens the pair.
    return MultiFernet([derived_fernet(secret.encode(), info=info) for secret in secrets])


class Sealer:
    """A token pair sealed for one purpose (`info`): SECRET_KEY seals, it and its fallbacks open."""

    def __init__(self, info: bytes):
        self.info = info

    def _keys(self) -> MultiFernet:
        secrets = (settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", ()))
        return _keys(self.info, tuple(secrets))

    def seal(self, tokens: Tokens) -> str:
        """Return `tokens` encrypted under the current SECRET_KEY."""
        plain = json.dumps({"access": tokens.access, "refresh": tokens.refresh})
        return self._keys().encrypt(plain.encode()).decode("ascii")

    def open(self, sealed: str) -> dict:
        """Return the fields a `seal()` wrote.

        :raises InvalidToken: not sealed under SECRET_KEY or one of its fallbacks.
        """
        data = json.loads(self._keys().decrypt(sealed.encode("ascii")))
        if not isinstance(data, dict):
            raise InvalidToken
        return data


_session_sealer = Sealer(b"accounts.vault.tokens")
seal = _session_sealer.seal


def unseal(value) -> Tokens | None:
    """Return the pair sealed in `value`, or None if absent, unreadable or under an unknown key."""
    if not isinstance(value, str) or not value:
        return None
    try:
        data = _session_sealer.open(value)
    except (InvalidToken, UnicodeError, ValueError):
        return None
    access, refresh = usable_token(data.get("access")), usable_token(data.get("refresh"))
    tokens = Tokens(access=access, refresh=refresh)
    return tokens if tokens.refresh else None


def tokens_of(session: SessionBase) -> Tokens | None:
    """Return the pair a session holds (any session: this request's or another's), if any."""
    return unseal(session.get(SESSION_KEY))
