"""A fake auth backend for unit tests, on `responses`: only the network is mocked."""

import contextlib
import json
import secrets
import threading
import time
from email.utils import formatdate

import jwt
import requests
import responses
from urllib3.exceptions import MaxRetryError, NewConnectionError

BASE = "http://authapi.test"
JWT_KEY = "unit-test-signing-key-of-32-bytes-or-more"

PROFILES = {
    "admin": {
        "id": 1,
        "firstName": "Ada",
        "lastName": "Admin",
        "email": "admin@example.com",
        "roles": ["admin"],
    },
    "evaluator": {
        "id": 2,
        "firstName": "Eve",
        "lastName": "Evaluator",
        "email": "evaluator@example.com",
        "roles": ["evaluator"],
    },
    "viewer": {
        "id": 3,
        "firstName": "Victor",
        "lastName": "Viewer",
        "email": "viewer@example.com",
        "roles": ["viewer"],
    },
}


def access_jwt(ttl: int = 1800, sub: str = "1", lifetime: int = 1800) -> str:
    """Return a JWT expiring in `ttl` seconds out of a `lifetime`-second life.

    Each one is new (a random `jti`): two made in the same second never compare equal.
    """
    now = int(time.time())
    claims = {
        "sub": sub,
        "iat": now + ttl - lifetime,
        "exp": now + ttl,
        "jti": secrets.token_hex(6),
    }
    return jwt.encode(claims, JWT_KEY, algorithm="HS256")


def express_cookie(name: str, value: str, max_age: int, **attrs: str) -> str:
    """Render a Set-Cookie header value the way Express does (Expires has a comma)."""
    expires = formatdate(time.time() + max_age, usegmt=True)
    parts = [f"{name}={value}", f"Max-Age={max_age}", "Path=/", f"Expires={expires}"]
    parts += [f"{k}={v}" for k, v in attrs.items()]
    parts += ["HttpOnly", "Secure", "SameSite=None"]
    return "; ".join(parts)


def token_headers(access: str, refresh: str) -> list[tuple[str, str]]:
    return [
        ("Set-Cookie", express_cookie("access_token", access, 1800)),
        ("Set-Cookie", express_cookie("refresh_token", refresh, 604800)),
    ]


def stub_login(rsps: responses.RequestsMock, *, status=201, headers=None, **kwargs):
    if headers is None and status in (200, 201):
        headers = token_headers(access_jwt(), "refresh-1")
    return rsps.post(f"{BASE}/auth/login", status=status, headers=headers or [], **kwargs)


def stub_me(rsps: responses.RequestsMock, who="admin", *, status=200, **kwargs):
    if "json" not in kwargs and "body" not in kwargs:
        kwargs["json"] = PROFILES[who]
    return rsps.get(f"{BASE}/users/me", status=status, **kwargs)


def stub_logout(rsps: responses.RequestsMock, *, status=200):
    headers = [
        ("Set-Cookie", "access_token=; Max-Age=0; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT"),
        ("Set-Cookie", "refresh_token=; Max-Age=0; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT"),
    ]
    return rsps.post(f"{BASE}/auth/logout", status=status, json={"ok": True}, headers=headers)


def stub_refresh(
    rsps: responses.RequestsMock, *, access=None, refresh="refresh-2", status=200, **kw
):
    """Register one /auth/refresh answer (several calls register a sequence)."""
    if status in (200, 201) and "headers" not in kw:
        kw["headers"] = token_headers(access or access_jwt(), refresh)
    return rsps.post(f"{BASE}/auth/refresh", status=status, **kw)


def sent_cookie(call, name: str) -> str | None:
    """Return the value of cookie `name` in a recorded call's Cookie header."""
    for part in call.request.headers.get("Cookie", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


def calls_to(rsps, path: str) -> list:
    """Return the recorded calls whose URL path ends with `path`."""
    return [c for c in rsps.calls if c.request.url.split("?")[0].endswith(path)]


def make_user(who: str):
    """Mirror one of PROFILES into the user table, as a sign-in would."""
    from accounts.backends import AuthApiBackend
    from accounts.models import UserProfile

    profile = PROFILES[who]
    return AuthApiBackend().mirror(
        UserProfile(
            id=str(profile["id"]),
            email=profile["email"],
            first_name=profile["firstName"],
            last_name=profile["lastName"],
            roles=tuple(profile["roles"]),
        )
    )


def sign_in_client(
    client, who="admin", *, access=None, refresh="refresh-1", cookies=True, storage="cookies"
):
    """Sign a Django test client in as a PROFILES user, as a real sign-in would.

    The session gets the TokenRecord of the pair (what accounts/checking.py checks
    every request against) and the pair sealed (accounts/vault.py); in cookie
    `storage`, unless `cookies` is False, the browser gets the two token
    cookies. `access=None` records a pair without an access token.
    """
    from accounts import vault
    from accounts.client import Tokens
    from accounts.cookies import parse_set_cookie
    from accounts.record import SESSION_KEY, TokenRecord

    user = make_user(who)
    client.force_login(user, backend="accounts.backends.AuthApiBackend")
    issued = []
    if access is not None:
        issued.append(parse_set_cookie(express_cookie("access_token", access, 1800)))
    if refresh is not None:
        issued.append(parse_set_cookie(express_cookie("refresh_token", refresh, 604800)))
    record = TokenRecord.issue(
        user_id=str(PROFILES[who]["id"]),
        access=access,
        refresh=refresh or "",
        cookies=issued,
        storage=storage,
    )
    session = client.session
    session[SESSION_KEY] = record.as_session_value()
    session[vault.SESSION_KEY] = vault.seal(Tokens(access=access, refresh=refresh))
    session.save()
    if cookies and storage == "cookies":
        for cookie in issued:
            client.cookies[cookie.name] = cookie.value
    return client


def connection_refused() -> requests.ConnectionError:
    """Return the error `requests` raises when nothing listens: the request never left.

    The same shape as the real one (ConnectionError(MaxRetryError(reason=
    NewConnectionError))), which accounts.client tells apart from a
    connection dropped after sending. A bare `requests.ConnectionError()`
    counts as "maybe processed".
    """
    reason = NewConnectionError(None, "Failed to establish a new connection: [Errno 111]")
    return requests.ConnectionError(MaxRetryError(None, f"{BASE}/", reason))


class Gate:
    """A backend answer held back until the test opens it (never longer than `limit` s).

    `entered` is set once a call is waiting at the gate; `calls` counts the calls.
    """

    def __init__(self, limit: float = 10.0):
        self.entered = threading.Event()
        self.opened = threading.Event()
        self.limit = limit
        self.calls = 0

    def hold(self) -> None:
        self.calls += 1
        self.entered.set()
        self.opened.wait(self.limit)

    def open(self) -> None:
        self.opened.set()

    def wait_entered(self) -> None:
        assert self.entered.wait(self.limit), "no call reached the gate"


def stub_held(rsps, method: str, path: str, gate: Gate, *, status=200, headers=(), body=""):
    """Register an answer that waits at `gate` first (or raises `body` if an exception)."""

    def answer(request):
        gate.hold()
        if isinstance(body, Exception):
            raise body
        return (status, list(headers), body)

    return rsps.add_callback(method, f"{BASE}{path}", callback=answer)


def stub_held_refresh(rsps, gate: Gate, *, access=None, refresh="refresh-2"):
    """Register a /auth/refresh answer (a new pair) held at `gate`."""
    headers = token_headers(access or access_jwt(), refresh)
    return stub_held(rsps, "POST", "/auth/refresh", gate, headers=headers, body='{"ok": true}')


def sent_token(request, name: str = "access_token") -> str | None:
    """Return the token a recorded request carried in its Cookie (or Bearer) header."""
    bearer = request.headers.get("Authorization", "")
    if name == "access_token" and bearer.startswith("Bearer "):
        return bearer.removeprefix("Bearer ")
    for part in request.headers.get("Cookie", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


def stub_me_by_token(rsps, answers: dict, default: int = 401):
    """Answer /users/me by the access token it carries, as a real backend would.

    `answers` maps a token to a PROFILES key or a profile dict (200), or a
    status; tokens not named get `default`. Refresh calls in the pool and the
    request's own calls may then come in any order.
    """

    def answer(request):
        result = answers.get(sent_token(request), default)
        if isinstance(result, int):
            return (result, [], '{"message": "Unauthorized"}')
        profile = PROFILES[result] if isinstance(result, str) else result
        return (200, [("Content-Type", "application/json")], json.dumps(profile))

    return rsps.add_callback("GET", f"{BASE}/users/me", callback=answer)


def record_of(client):
    """Return the TokenRecord a test client's session holds (None if none)."""
    from accounts.record import SESSION_KEY, TokenRecord

    return TokenRecord.from_session_value(client.session.get(SESSION_KEY))


def edit_record(client, **changes):
    """Change fields of the TokenRecord in a test client's session."""
    from accounts.record import SESSION_KEY

    session = client.session
    session[SESSION_KEY] = {**session[SESSION_KEY], **changes}
    session.save()


def assert_signed_out(client, response, *, page="/dashboard/"):
    """Assert a page request was signed out: to sign-in with `next`, session and cookies gone."""
    from urllib.parse import parse_qs, urlsplit

    from django.contrib.auth import SESSION_KEY

    assert response.status_code == 302
    location = urlsplit(response["Location"])
    assert location.path == "/accounts/login/"
    assert parse_qs(location.query)["next"] == [page]
    assert SESSION_KEY not in client.session
    for name in ("access_token", "refresh_token"):
        assert response.cookies[name].value == ""
        assert response.cookies[name]["max-age"] == 0


def direct_request(
    rf, record=None, cookies=None, backend_path="accounts.backends.AuthApiBackend", who="admin"
):
    """Return a RequestFactory GET of /dashboard/ with a saved session, signed in as `who`.

    The session holds `record` (default: the pair acc-1 / refresh-1; "none" for no
    record) and the request carries `cookies` (default: that pair).
    """
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, SESSION_KEY

    from accounts.record import SESSION_KEY as RECORD_KEY
    from accounts.record import TokenRecord

    user = make_user(who)
    if record is None:
        record = TokenRecord.issue(user_id="1", access="acc-1", refresh="refresh-1", cookies=[])
    session = import_module(settings.SESSION_ENGINE).SessionStore()
    session.update({SESSION_KEY: str(user.pk), BACKEND_SESSION_KEY: backend_path})
    if record != "none":
        session[RECORD_KEY] = record.as_session_value()
    session.save()
    request = rf.get("/dashboard/")
    request.session = type(session)(session_key=session.session_key)  # as loaded, unmodified
    if cookies is None:
        cookies = {"access_token": "acc-1", "refresh_token": "refresh-1"}
    request.COOKIES.update(cookies)
    request.user = user
    return request


class Source:
    """A client TokenSource holding `tokens`, renewing to `renewed`, counting its renewals."""

    def __init__(self, tokens, renewed=None):
        self.tokens, self.renewed = tokens, renewed
        self.renewals = 0

    def tokens_for_call(self):
        return self.tokens

    def renew_after_rejection(self):
        self.renewals += 1
        self.tokens = self.renewed
        return self.tokens

    def refused_after_renewal(self):
        from accounts.exceptions import TokensRefused
        from accounts.reasons import Reason

        raise TokensRefused(Reason.REJECTED_TWICE)


def spy_on(monkeypatch, session) -> list[dict]:
    """Record the keyword arguments of every request a requests.Session makes."""
    seen, original = [], session.request

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(session, "request", spy)
    return seen


def sessions_made(monkeypatch) -> list:
    """Record every requests.Session the client makes from now on (its calls, its closing)."""
    from accounts import client as client_module

    made, make = [], client_module._session

    def recording():
        session = make()
        session.calls, session.closed, close = spy_on(monkeypatch, session), False, session.close

        def closing():
            session.closed = True
            close()

        monkeypatch.setattr(session, "close", closing)
        made.append(session)
        return session

    monkeypatch.setattr(client_module, "_session", recording)
    return made


@contextlib.contextmanager
def heard(signal, *fields: str):
    """Collect what `signal` (accounts/signals.py) is sent with while the block runs.

    Yields a list that gets, per send, the values of `fields` as a tuple (the
    value alone when one field is named).
    """
    sent: list = []

    def receiver(sender, **kwargs):
        values = tuple(kwargs[name] for name in fields)
        sent.append(values[0] if len(values) == 1 else values)

    signal.connect(receiver)
    try:
        yield sent
    finally:
        signal.disconnect(receiver)


def user_session(user, *, sid: str = "", device: str = "", address: str = "", at=None) -> str:
    """Make a session signed in as `user` as sign-in would: in the store SESSION_ENGINE
    names, with its sign-in entry, indexed in accounts.usersessions; return its key."""
    from datetime import UTC, datetime
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import SESSION_KEY
    from django.utils import timezone

    from accounts.usersessions.models import UserSession
    from accounts.usersessions.signins import SIGN_IN_KEY

    at = time.time() if at is None else at
    store = import_module(settings.SESSION_ENGINE).SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[SIGN_IN_KEY] = {"at": at, "device": device, "address": address, "sid": sid}
    store.create()
    UserSession.objects.create(
        session_key=store.session_key,
        user=user,
        signed_in_at=datetime.fromtimestamp(at, UTC),
        device=device,
        address=address,
        backend_sid=sid,
        last_seen=timezone.now(),
        expires_at=store.get_expiry_date(),
    )
    return store.session_key


def live_session_keys() -> set[str]:
    """The keys of the sessions still signed in: indexed, and still in their store."""
    from accounts.usersessions.models import UserSession
    from accounts.usersessions.signins import session_store

    indexed = UserSession.objects.values_list("session_key", flat=True)
    return {key for key in indexed if session_store().exists(key)}
