"""A user's signed-in browsers: what each sign-in was, and how to end one.

Each `UserSession` row (accounts/usersessions/models.py) is one signed-in
browser: whose session it is, where and when it signed in, its backend
sign-in id (`sid`) and when it was last seen. `record()` writes it when
someone signs in, `forget()` deletes it when Django's `logout()` ends the
session, `touch()` keeps `last_seen` and `expires_at` up to date, and
`end()` ends another browser's session the way sign-out ends one's own: its
pair revoked at the backend (queued by accounts/revocations.py when the
backend cannot be told), then the session deleted from the store
SESSION_ENGINE names, so its next request is anonymous.
"""

import contextlib
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import import_module

from django.conf import settings
from django.contrib.auth import SESSION_KEY as AUTH_USER
from django.contrib.auth.signals import user_logged_in, user_logged_out
from django.contrib.sessions.backends.base import SessionBase
from django.db import DatabaseError
from django.dispatch import receiver
from django.http import HttpRequest
from django.utils import timezone
from django.utils.crypto import salted_hmac

from .. import revocations, signals
from ..conf import conf
from ..forwarded import client_ip
from ..reasons import Reason
from ..record import SESSION_KEY as RECORD_KEY
from ..record import TokenRecord
from ..tokens import access_token_claims
from ..vault import SESSION_KEY as VAULT_KEY
from ..vault import unseal
from .models import UserSession

logger = logging.getLogger(__name__)

# The session entry a sign-in writes: {"at": unix time, "device": "Chrome 156
# on Linux", "address": "203.0.113.9", "sid": backend id}. The row is made
# from it; the entry stays in the session for whoever reads the session alone.
SIGN_IN_KEY = "_auth_sign_in"

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


@receiver(user_logged_in, dispatch_uid="accounts.usersessions.record")
def record(sender, request: HttpRequest | None, user, **kwargs) -> None:
    """Index the new session: when, from which device and address, which sid."""
    if request is None or not hasattr(request, "session"):
        return
    from ..state import TokenState  # state imports the backend client, which is fine here

    claims = access_token_claims(TokenState.of(request).tokens.access) or {}
    sid = claims.get("sid")
    entry = {
        "at": time.time(),
        "device": summarise(request.META.get("HTTP_USER_AGENT", "")),
        "address": client_ip(request)[:64],
        "sid": str(sid)[:128] if isinstance(sid, str | int) and not isinstance(sid, bool) else "",
    }
    session = request.session
    session[SIGN_IN_KEY] = entry
    if session.session_key is None:
        # login() flushed the session of another user: give this one its key now.
        session.save()
    now = timezone.now()
    UserSession.objects.filter(expires_at__lte=now).delete()  # whoever's: they are over
    UserSession.objects.update_or_create(
        session_key=session.session_key,
        defaults={
            "user": user,
            "signed_in_at": datetime.fromtimestamp(entry["at"], UTC),
            "device": entry["device"][:200],
            "address": entry["address"],
            "backend_sid": entry["sid"],
            "last_seen": now,
            "expires_at": session.get_expiry_date(),
            "token_storage": _storage(session),
        },
    )
    # Not noted as seen: this response's touch records where the tokens went.


@receiver(user_logged_out, dispatch_uid="accounts.usersessions.forget")
def forget(sender, request: HttpRequest | None, user, **kwargs) -> None:
    """Delete the row of the session Django's `logout()` is about to flush."""
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if session_key is not None:
        UserSession.objects.filter(session_key=session_key).delete()


class _Seen:
    """When this process last wrote each session's row (monotonic), the most recent 10,000."""

    LIMIT = 10_000

    def __init__(self):
        self._at: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def due(self, session_key: str) -> bool:
        with self._lock:
            at = self._at.get(session_key)
        return at is None or time.monotonic() - at >= conf.session_touch_interval

    def note(self, session_key: str) -> None:
        with self._lock:
            self._at[session_key] = time.monotonic()
            self._at.move_to_end(session_key)
            while len(self._at) > self.LIMIT:
                self._at.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._at.clear()


_seen = _Seen()


def touch(request: HttpRequest) -> None:
    """Bring the row of a signed-in session this request read up to date (one UPDATE).

    At most every AUTH_SESSION_TOUCH_INTERVAL seconds per session and process:
    `last_seen`, the session's expiry as its store now says, and where its
    tokens are. A session without a sign-in entry (another way of signing in,
    or a session flushed during the request) is left alone, and so is one the
    request never read.
    """
    session = getattr(request, "session", None)
    # Only a session the request read anyway: no query for a page that never looked.
    if session is None or not session.accessed:
        return
    session_key = session.session_key
    if session_key is None or SIGN_IN_KEY not in session or AUTH_USER not in session:
        return
    if not _seen.due(session_key):
        return
    try:
        UserSession.objects.filter(session_key=session_key).update(
            last_seen=timezone.now(),
            expires_at=session.get_expiry_date(),
            token_storage=_storage(session),
        )
    except DatabaseError:
        return  # only the sessions page's "last seen" is late; tried again next time
    _seen.note(session_key)


def _storage(session: SessionBase) -> str:
    record = session.get(RECORD_KEY)
    storage = record.get("storage", "cookies") if isinstance(record, dict) else ""
    return str(storage)[:10]


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


def session_store(session_key: str | None = None) -> SessionBase:
    """The store SESSION_ENGINE names, for `session_key`."""
    return import_module(settings.SESSION_ENGINE).SessionStore(session_key=session_key)


def sessions_of(user, *, current_key: str | None = None) -> list[SignedIn]:
    """Return the user's live sessions, most recently seen first.

    A row whose session the store no longer has (deleted some other way than
    through `logout()` or `end()`) is deleted on the way.
    """
    rows = UserSession.objects.live().filter(user=user).order_by("-last_seen", "-signed_in_at")
    found, gone = [], []
    for row in rows:
        if row.session_key != current_key and not session_store().exists(row.session_key):
            gone.append(row.session_key)
            continue
        found.append(
            SignedIn(
                id=public_id(row.session_key),
                device=row.device or "Unknown device",
                address=row.address,
                signed_in_at=row.signed_in_at,
                last_seen=row.last_seen,
                current=row.session_key == current_key,
            )
        )
    if gone:
        UserSession.objects.filter(session_key__in=gone).delete()
    return found


def find(user, session_id: str) -> UserSession | None:
    """Return the user's live session row whose public id is `session_id`, if any."""
    for row in UserSession.objects.live().filter(user=user).only("session_key", "device"):
        if public_id(row.session_key) == session_id:
            return row
    return None


def end(session_key: str, *, revoke: bool = True) -> bool:
    """End one session that is not the current request's; return whether it existed."""
    return end_many([session_key], revoke=revoke) == 1


def end_many(
    session_keys: Iterable[str], *, revoke: bool = True, reason: Reason = Reason.ENDED_ELSEWHERE
) -> int:
    """End sessions that are not the current request's; return how many existed.

    With `revoke`, each session's pair is revoked at the backend first; the
    sessions go whatever the backend says, so each browser is signed out at
    its next request. Once the backend has failed, the remaining revocations
    are queued without calling it again: a backend that hangs costs one
    timeout, not one per session.
    """
    ended = 0
    revoker = revocations.Revoker()
    for session_key in session_keys:
        store = session_store(session_key)
        data = store.load()
        if store.session_key is not None:
            tokens = unseal(data.get(VAULT_KEY))
            # None: signed in another way, or before the pair was kept in the session.
            if revoke and tokens is not None:
                revoker.revoke(tokens, record=TokenRecord.from_session_value(data.get(RECORD_KEY)))
            store.delete(session_key)
            signals.sign_out(reason)
            ended += 1
            logger.info("Session of user %s ended from elsewhere", data.get("_auth_user_id", "?"))
        UserSession.objects.filter(session_key=session_key).delete()
    return ended


def keys_of(user, *, keep: str | None = None) -> list[str]:
    """The session keys of the user's live sessions, but `keep`."""
    rows = UserSession.objects.live().filter(user=user).exclude(session_key=keep)
    return list(rows.values_list("session_key", flat=True))
