"""A user's signed-in browsers: what each sign-in was, and how to end one.

Each `accounts.Session` row is one signed-in browser: Django's session plus
whose it is, where and when it signed in, its backend sign-in id (`sid`) and
when it was last seen (accounts/sessions.py writes the columns). `record()`
fills the session's sign-in entry when someone signs in; `end()` ends another
browser's session the way sign-out ends one's own: its pair revoked at the
backend (queued by accounts/revocations.py when the backend cannot be told),
then its row deleted, so its next request is anonymous.
"""

import contextlib
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver
from django.http import HttpRequest
from django.utils import timezone
from django.utils.crypto import salted_hmac

from . import revocations, signals
from .models import Session
from .reasons import Reason
from .record import SESSION_KEY as RECORD_KEY
from .record import TokenRecord
from .sessions import SIGN_IN_KEY
from .throttle import client_ip
from .tokens import access_token_claims
from .vault import SESSION_KEY as VAULT_KEY
from .vault import unseal

logger = logging.getLogger(__name__)

# (pattern, name), first match wins: Edge and Opera say "Chrome" too, and
# every Chromium says "Safari".
_BROWSERS = (
    (r"\bEdg(?:e|A|iOS)?/(\d+)", "Edge"),
    (r"\bOPR/(\d+)", "Opera"),
    (r"\bFirefox/(\d+)", "Firefox"),
    (r"\bFxiOS/(\d+)", "Firefox"),
    (r"\bCriOS/(\d+)", "Chrome"),
    (r"\b(?:HeadlessChrome|Chromium|Chrome)/(\d+)", "Chrome"),
    (r"\bVersion/(\d+)[.\d]* (?:Mobile/\S+ )?Safari/", "Safari"),
    (r"\bcurl/(\d+)", "curl"),
    (r"\bpython-requests/(\d+)", "python-requests"),
)
_SYSTEMS = (
    (r"\biPhone\b", "iPhone"),
    (r"\biPad\b", "iPad"),
    (r"\bAndroid\b", "Android"),
    (r"\bWindows\b", "Windows"),
    (r"\bMac OS X\b|\bMacintosh\b", "macOS"),
    (r"\bCrOS\b", "ChromeOS"),
    (r"\bLinux\b", "Linux"),
)


def summarise(user_agent: str) -> str:
    """Return "Firefox 132 on Windows" for a User-Agent header; "Unknown device" for none."""
    user_agent = _printable(user_agent[:1000])
    browser = next(
        (f"{name} {m[1]}" for pattern, name in _BROWSERS if (m := re.search(pattern, user_agent))),
        None,
    )
    system = next((name for pattern, name in _SYSTEMS if re.search(pattern, user_agent)), None)
    if browser and system:
        return f"{browser} on {system}"
    if browser or system:
        return browser or system
    # Something else (a bot, a script): its first word that says anything.
    word = next((w for w in user_agent.split() if any(c.isalnum() for c in w)), None)
    return word[:60] if word else "Unknown device"


def _printable(user_agent: str) -> str:
    # WSGI hands a header over as its bytes decoded as Latin-1 (PEP 3333), so
    # a UTF-8 header arrives as mojibake: read it as UTF-8 where it is. Control
    # characters become spaces: the name is written to a text column
    # (PostgreSQL refuses NUL) and shown in a page.
    with contextlib.suppress(UnicodeError):
        user_agent = user_agent.encode("latin-1").decode("utf-8")
    return "".join(c if c.isprintable() else " " for c in user_agent)


@receiver(user_logged_in, dispatch_uid="accounts.devices.record")
def record(sender, request: HttpRequest | None, user, **kwargs) -> None:
    """Write the new session's sign-in entry: when, from which device and address, which sid."""
    if request is None or not hasattr(request, "session"):
        return
    from .state import TokenState  # state imports the backend client, which is fine here

    claims = access_token_claims(TokenState.of(request).tokens.access) or {}
    sid = claims.get("sid")
    request.session[SIGN_IN_KEY] = {
        "at": time.time(),
        "device": summarise(request.META.get("HTTP_USER_AGENT", "")),
        "address": client_ip(request)[:64],
        "sid": str(sid)[:128] if isinstance(sid, str | int) and not isinstance(sid, bool) else "",
    }


@dataclass(frozen=True)
class SignedIn:
    """One signed-in browser, as the sessions page shows it."""

    id: str
    device: str
    address: str
    signed_in_at: datetime | None
    last_seen: datetime | None
    current: bool


def public_id(session_key: str) -> str:
    """An id for a session that can be shown in a page: never the session key itself."""
    return salted_hmac("accounts.devices.id", session_key, algorithm="sha256").hexdigest()[:20]


def sessions_of(user, *, current_key: str | None = None) -> list[SignedIn]:
    """Return the user's unexpired sessions, most recently seen first."""
    rows = Session.objects.filter(user=user, expire_date__gt=timezone.now()).order_by(
        "-last_seen", "-signed_in_at"
    )
    return [
        SignedIn(
            id=public_id(row.session_key),
            device=row.device or "Unknown device",
            address=row.address,
            signed_in_at=row.signed_in_at,
            last_seen=row.last_seen,
            current=row.session_key == current_key,
        )
        for row in rows.only("session_key", "device", "address", "signed_in_at", "last_seen")
    ]


def find(user, session_id: str) -> Session | None:
    """Return the user's session row whose public id is `session_id`, if any."""
    rows = Session.objects.filter(user=user, expire_date__gt=timezone.now())
    for row in rows.only("session_key"):
        if public_id(row.session_key) == session_id:
            return row
    return None


def end(session_key: str, *, revoke: bool = True) -> bool:
    """End one session that is not the current request's; return whether it existed."""
    return end_many([session_key], revoke=revoke) == 1


def end_many(session_keys: Iterable[str], *, revoke: bool = True) -> int:
    """End sessions that are not the current request's; return how many existed.

    With `revoke`, each session's pair is revoked at the backend first; the
    rows go whatever the backend says, so each browser is signed out at its
    next request. Once the backend has failed, the remaining revocations are
    queued without calling it again: a backend that hangs costs one timeout,
    not one per session.
    """
    ended = 0
    revoker = revocations.Revoker()
    for session_key in session_keys:
        store = Session.get_session_store_class()(session_key=session_key)
        data = store.load()
        if store.session_key is None:
            continue  # gone or expired already
        tokens = unseal(data.get(VAULT_KEY))
        # None: signed in another way, or before the pair was kept in the session.
        if revoke and tokens is not None:
            record = TokenRecord.from_session_value(data.get(RECORD_KEY))
            revoker.revoke(tokens, record=record)
        store.delete(session_key)
        signals.sign_out(Reason.ENDED_ELSEWHERE)
        ended += 1
        logger.info("Session of user %s ended from elsewhere", data.get("_auth_user_id", "?"))
    return ended
