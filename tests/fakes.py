"""A fake auth backend for unit tests, on `responses`: only the network is mocked."""

import time
from email.utils import formatdate

import jwt
import responses

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
    """Return a JWT expiring in `ttl` seconds out of a `lifetime`-second life."""
    now = int(time.time())
    claims = {"sub": sub, "iat": now + ttl - lifetime, "exp": now + ttl}
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
    from accounts.models import User, UserProfile

    profile = PROFILES[who]
    return User.objects.sync_from_profile(
        UserProfile(
            id=str(profile["id"]),
            email=profile["email"],
            first_name=profile["firstName"],
            last_name=profile["lastName"],
            roles=tuple(profile["roles"]),
        )
    )


def sign_in_client(client, who="admin", *, access=None, refresh="refresh-1", cookies=True):
    """Sign a Django test client in as a PROFILES user, as a real sign-in would.

    The session gets the TokenRecord of the pair (what accounts/state.py checks
    every request against) and, unless `cookies` is False, the browser gets
    the two token cookies. `access=None` records a pair without an access token.
    """
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
        user_id=str(PROFILES[who]["id"]), access=access, refresh=refresh or "", cookies=issued
    )
    session = client.session
    session[SESSION_KEY] = record.as_session_value()
    session.save()
    if cookies:
        for cookie in issued:
            client.cookies[cookie.name] = cookie.value
    return client
