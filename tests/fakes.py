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


def access_jwt(ttl: int = 1800, sub: str = "1") -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "iat": now, "exp": now + ttl}, JWT_KEY, algorithm="HS256")


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
