"""`manage.py authcheck`: does this backend fit the app, and which settings does it need?

It signs in with a real account and calls the backend the way the app will:
sign-in, `/users/me`, refresh, sign-out, a wrong password, and (last, on a
throwaway sign-in of its own, announced before it runs) a spent refresh token
presented again. Each step is a `Check`: PASS, WARN or FAIL, what it saw,
what to do. `suggested_env()` turns what it saw into the `.env` lines for
this backend. The password is only ever sent to the backend: never printed,
logged or kept in a check.
"""

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from email.utils import parsedate_to_datetime

import requests

from . import clock
from .client import token_credentials
from .clock import SIGNIFICANT
from .conf import conf
from .cookies import BROWSER_LIMIT, COOKIE_VALUE, BackendCookie, relayed_size
from .tokens import access_token_claims

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"
ACCESS_FIELDS = ("accessToken", "access_token", "token", "jwt")
REFRESH_FIELDS = ("refreshToken", "refresh_token")
TIMEOUT = 10.0
TRANSPORT_SETTING = "AUTH_BACKEND_TOKEN_TRANSPORT"


@dataclass
class Check:
    name: str
    status: str
    saw: str
    advice: str = ""
    ms: float | None = None


@dataclass
class SetCookie:
    """One `Set-Cookie` header, every attribute kept (authcheck reports them all)."""

    name: str
    value: str
    attributes: dict[str, str | bool] = field(default_factory=dict)

    def summary(self) -> str:
        shown = [f"{k}={v}" if v is not True else k for k, v in self.attributes.items()]
        return f"{self.name} ({'; '.join(shown) or 'no attributes'})"


def parse_cookie_header(header: str) -> SetCookie | None:
    pair, *attributes = header.split(";")
    name, sep, value = pair.partition("=")
    if not sep or not name.strip():
        return None
    found: dict[str, str | bool] = {}
    for attribute in attributes:
        key, has_value, attr_value = attribute.partition("=")
        key = key.strip()
        if key:
            found[key.lower()] = attr_value.strip() if has_value else True
    return SetCookie(name.strip(), value.strip().strip('"'), found)


@dataclass
class Pair:
    """Tokens as the backend handed them out: by cookie or in the JSON body."""

    access: str | None = None
    refresh: str | None = None
    cookies: dict[str, SetCookie] = field(default_factory=dict)


class Backend:
    """The backend as authcheck talks to it: raw HTTP, nothing of the app's client."""

    def __init__(self, base_url: str):
        self.base_url = base_url.rstrip("/")
        self.http = requests.Session()
        self.http.trust_env = False

    def call(self, method: str, path: str, **kwargs) -> tuple[requests.Response, float]:
        started = time.monotonic()
        self.http.cookies.clear()
        response = self.http.request(
            method, f"{self.base_url}{path}", timeout=TIMEOUT, allow_redirects=False, **kwargs
        )
        return response, (time.monotonic() - started) * 1000


@dataclass
class Shape:
    """What the checks learned about the backend, for `suggested_env`."""

    transport: str | None = None  # cookie or body
    access_name: str | None = None
    refresh_name: str | None = None
    access_field: str | None = None
    refresh_field: str | None = None
    access_lifetime: float | None = None
    refresh_lifetime: float | None = None
    skew: float = 0.0
    rotates: bool | None = None
    too_large_for_cookies: bool = False


class AuthCheck:
    """Run the checks in order; `checks` holds the results, `shape` what they learned."""

    def __init__(
        self,
        base_url: str,
        email: str,
        password: str,
        *,
        destructive: bool = True,
        announce: Callable[[str], None] = lambda message: None,
    ):
        self.backend = Backend(base_url)
        self.email = email
        self._password = password
        self.destructive = destructive
        self.announce = announce
        self.checks: list[Check] = []
        self.shape = Shape()

    def add(self, name, status, saw, advice="", ms=None) -> Check:
        check = Check(name, status, saw, advice, None if ms is None else round(ms, 1))
        self.checks.append(check)
        return check

    @property
    def failed(self) -> bool:
        return any(check.status == FAIL for check in self.checks)

    # --- the run ----------------------------------------------------------------

    def run(self) -> list[Check]:
        try:
            pair = self.sign_in()
            if pair is None:
                return self.checks
            self.inspect_tokens(pair)
            self.profile(pair)
            renewed = self.refresh(pair)
            self.sign_out(renewed or pair)
            self.wrong_password()
            if self.destructive:
                self.reuse_probe()
            else:
                self.add("reuse detection", WARN, "not probed (--skip-destructive)")
        except requests.RequestException as exc:
            self.add(
                "backend reachable",
                FAIL,
                f"{type(exc).__name__} calling {self.backend.base_url}",
                "Check API_BASEURL (or --base-url) and that the backend is running.",
            )
        return self.checks

    def _login(self, password: str) -> tuple[requests.Response, float]:
        return self.backend.call(
            "POST", conf.login_path, json={"email": self.email, "password": password}
        )

    def sign_in(self) -> Pair | None:
        response, ms = self._login(self._password)
        self._observe_clock(response, ms)
        if response.status_code not in (200, 201):
            self.add(
                "sign-in",
                FAIL,
                f"POST {conf.login_path} answered {response.status_code}",
                "Check the email and password, and AUTH_LOGIN_PATH.",
                ms,
            )
            return None
        pair = self._pair(response)
        if not pair.access or not pair.refresh:
            self.add(
                "sign-in",
                FAIL,
                f"POST {conf.login_path} answered {response.status_code} without a token pair "
                "(no token cookies, no token fields in its JSON)",
                "The app needs an access and a refresh token from the sign-in.",
                ms,
            )
            return None
        where = (
            f"cookies {self.shape.access_name}, {self.shape.refresh_name}"
            if self.shape.transport == "cookie"
            else f"JSON fields {self.shape.access_field}, {self.shape.refresh_field}"
        )
        self.add("sign-in", PASS, f"{response.status_code}; tokens in {where}", ms=ms)
        self._check_set_cookie_headers(response)
        return pair

    def _pair(self, response: requests.Response, *, learn: bool = True) -> Pair:
        headers = [
            part for header in response.raw.headers.getlist("Set-Cookie") for part in _split(header)
        ]
        cookies = [c for c in map(parse_cookie_header, headers) if c is not None and c.value]
        pair = Pair(cookies={c.name: c for c in cookies})
        if cookies:
            access = _pick(cookies, ("access", "jwt", "token"), exclude=("refresh",))
            refresh = _pick(cookies, ("refresh",))
            if access and refresh:
                if learn:
                    self.shape.transport = "cookie"
                    self.shape.access_name, self.shape.refresh_name = access.name, refresh.name
                pair.access, pair.refresh = access.value, refresh.value
                return pair
            if self.shape.transport in ("cookie", "bearer") and access:
                pair.access = access.value
                by_name = pair.cookies.get(self.shape.refresh_name or "")
                pair.refresh = by_name.value if by_name else None
                return pair
        data = _json(response)
        if isinstance(data, dict):
            access_field = self.shape.access_field or _first(data, ACCESS_FIELDS)
            refresh_field = self.shape.refresh_field or _first(data, REFRESH_FIELDS)
            if access_field and isinstance(data.get(access_field), str):
                if learn and self.shape.transport is None:
                    self.shape.transport = "body"
                    self.shape.access_field, self.shape.refresh_field = access_field, refresh_field
                pair.access = data[access_field]
                value = data.get(refresh_field) if refresh_field else None
                pair.refresh = value if isinstance(value, str) else None
        return pair

    def _check_set_cookie_headers(self, response: requests.Response) -> None:
        if self.shape.transport != "cookie":
            return
        headers = response.raw.headers.getlist("Set-Cookie")
        joined = [h for h in headers if _joined(h)]
        if joined:
            count = sum(len(_split(h)) for h in headers)
            self.add(
                "one Set-Cookie header per cookie",
                FAIL,
                f"{len(headers)} header(s) for {count} cookies: cookies joined into one "
                "header with ', '",
                "Send each cookie in its own Set-Cookie header (Express's res.cookie() does); "
                "a joined header cannot be split back once an Expires date holds a comma.",
            )
        else:
            self.add("one Set-Cookie header per cookie", PASS, f"{len(headers)} header(s)")

    def inspect_tokens(self, pair: Pair) -> None:
        shape = self.shape
        if shape.transport == "cookie":
            for role, name in (("access", shape.access_name), ("refresh", shape.refresh_name)):
                cookie = pair.cookies[name]
                problems, advice = _cookie_problems(cookie, role)
                status = WARN if problems else PASS
                self.add(
                    f"{role} cookie",
                    status,
                    cookie.summary() + ("; " + "; ".join(problems) if problems else ""),
                    advice,
                )
        else:
            self.add(
                "token transport",
                PASS,
                f"tokens in the JSON body ({shape.access_field}, {shape.refresh_field})",
                "The app sends the access token as Bearer and the refresh token in the body.",
            )
        shape.access_lifetime = self._lifetime(pair.access, pair.cookies.get(shape.access_name))
        shape.refresh_lifetime = self._lifetime(pair.refresh, pair.cookies.get(shape.refresh_name))
        access, refresh = shape.access_lifetime, shape.refresh_lifetime
        seen = f"access {_duration(access)}, refresh {_duration(refresh)}"
        if access is None:
            self.add(
                "token lifetimes",
                WARN,
                seen,
                "No Max-Age and no JWT exp: the app cannot refresh before expiry; it "
                "refreshes on the backend's 401 instead"
                + (" (set AUTH_BODY_ACCESS_LIFETIME)" if shape.transport == "body" else ""),
            )
        elif refresh is None:
            self.add(
                "token lifetimes",
                WARN,
                seen,
                "Set AUTH_BODY_REFRESH_LIFETIME to the refresh token's lifetime: the app "
                "keeps the session and its cookie that long."
                if shape.transport == "body"
                else "Give the refresh cookie a Max-Age: the app keeps the session that long.",
            )
        else:
            self.add("token lifetimes", PASS, seen)
        self._check_cookie_sizes(pair)
        claims = access_token_claims(pair.access) or {}
        skew = self.shape.skew
        if abs(skew) < SIGNIFICANT:
            self.add("clock", PASS, "the backend's Date agrees with this server's clock")
        else:
            self.add(
                "clock",
                WARN,
                f"the backend's clock is {skew:+.0f} s off this server's"
                + (f" (JWT iat {claims.get('iat')})" if "iat" in claims else ""),
                "The app reads token expiries on its own clock (accounts/clock.py); "
                "still, run NTP on both machines.",
            )

    def _check_cookie_sizes(self, pair: Pair) -> None:
        """In cookie mode the app relays each token as a cookie: would a browser keep it?"""
        shape = self.shape
        sizes = []
        for name, token, lifetime in (
            (shape.access_name or conf.access_cookie, pair.access, shape.access_lifetime),
            (shape.refresh_name or conf.refresh_cookie, pair.refresh, shape.refresh_lifetime),
        ):
            if token:
                max_age = int(lifetime) if lifetime else None
                cookie = BackendCookie(name=name, value=token, max_age=max_age)
                sizes.append((relayed_size(cookie), name))
        if not sizes:
            return
        size, name = max(sizes)
        if size > BROWSER_LIMIT:
            shape.too_large_for_cookies = True
            self.add(
                "cookie size",
                WARN,
                f"the app's {name} cookie would be {size} bytes with its attributes; browsers "
                f"drop cookies over {BROWSER_LIMIT} bytes",
                "Set AUTH_TOKEN_STORAGE=session: the tokens stay in the server-side session "
                "and the browser holds only the session cookie (in cookie mode sign-in "
                "answers an error page instead).",
            )
        else:
            self.add("cookie size", PASS, f"largest {name}: {size} of {BROWSER_LIMIT} bytes")

    def _lifetime(self, token: str | None, cookie: SetCookie | None) -> float | None:
        known = []
        if cookie is not None:
            max_age = cookie.attributes.get("max-age")
            if isinstance(max_age, str) and max_age.lstrip("-").isdigit():
                known.append(float(max_age))
            elif isinstance(cookie.attributes.get("expires"), str):
                try:
                    expires = parsedate_to_datetime(cookie.attributes["expires"]).timestamp()
                    known.append(expires - self.shape.skew - time.time())
                except (TypeError, ValueError):
                    pass
        exp = (access_token_claims(token) or {}).get("exp")
        if isinstance(exp, int | float) and not isinstance(exp, bool):
            known.append(exp - self.shape.skew - time.time())
        return min(known) if known else None

    def _observe_clock(self, response: requests.Response, ms: float) -> None:
        received_at = time.time()
        measured = clock.measure(
            response.headers.get("Date"), sent_at=received_at - ms / 1000, received_at=received_at
        )
        if measured is not None:
            self.shape.skew = measured

    def _send(self, method: str, path: str, pair: Pair, attach: str) -> tuple:
        """Make a call carrying the pair the way the app would for this backend's shape."""
        shape = self.shape
        headers, fields = token_credentials(
            pair.access,
            pair.refresh,
            attach,
            transport=shape.transport,
            access_cookie=shape.access_name,
            refresh_cookie=shape.refresh_name,
            refresh_field=shape.refresh_field,
        )
        return self.backend.call(method, path, headers=headers, json=fields or None)

    def profile(self, pair: Pair) -> None:
        response, ms = self._send("GET", conf.me_path, pair, "access")
        if response.status_code == 401 and self.shape.transport == "cookie":
            # Cookies out, but a passport-jwt guard reading the header only?
            bearer, bearer_ms = self.backend.call(
                "GET", conf.me_path, headers={"Authorization": f"Bearer {pair.access}"}
            )
            if bearer.status_code == 200:
                self.shape.transport = "bearer"
                response, ms = bearer, bearer_ms
        data = _json(response)
        if response.status_code != 200 or not isinstance(data, dict):
            self.add(
                "profile",
                FAIL,
                f"GET {conf.me_path} answered {response.status_code}",
                "The app reads who is signed in from AUTH_ME_PATH with the access token.",
                ms,
            )
            return
        missing = [k for k in ("id", "email", "roles") if k not in data]
        if missing or not isinstance(data.get("roles"), list):
            self.add(
                "profile",
                FAIL,
                f"GET {conf.me_path}: missing or malformed {', '.join(missing) or 'roles'}",
                'The app needs {"id", "email", "roles": [...]} (firstName, lastName optional).',
                ms,
            )
            return
        name = " ".join(str(data.get(k) or "") for k in ("firstName", "lastName")).strip()
        shown = f"name {name!r}" if name else "no firstName/lastName (the app shows the email)"
        via = (
            " (read with Authorization: Bearer, not the cookie)"
            if (self.shape.transport == "bearer")
            else ""
        )
        self.add("profile", PASS, f"id, email, {shown}, roles {data['roles']}{via}", ms=ms)
        shared = sorted(conf.allowed_roles & set(map(str, data["roles"])))
        if shared:
            self.add("allowed roles", PASS, f"shares {', '.join(shared)} with AUTH_ALLOWED_ROLES")
        else:
            self.add(
                "allowed roles",
                WARN,
                f"roles {data['roles']} share none with AUTH_ALLOWED_ROLES "
                f"({', '.join(sorted(conf.allowed_roles))})",
                "This account would be refused by the app; set AUTH_ALLOWED_ROLES.",
            )

    def refresh(self, pair: Pair) -> Pair | None:
        response, ms = self._send("POST", conf.refresh_path, pair, "refresh")
        renewed = self._pair(response, learn=False)
        if response.status_code not in (200, 201) or not renewed.access:
            self.add(
                "refresh",
                FAIL,
                f"POST {conf.refresh_path} answered {response.status_code} without a new "
                "access token",
                "The app refreshes with the refresh token alone, as the sign-in handed it out.",
                ms,
            )
            return None
        self.add("refresh", PASS, f"{response.status_code}, a new access token", ms=ms)
        if renewed.refresh and renewed.refresh != pair.refresh:
            self.shape.rotates = True
            self.add("rotation", PASS, "each refresh hands out a new refresh token")
        else:
            self.shape.rotates = False
            renewed.refresh = pair.refresh
            self.add(
                "rotation",
                WARN,
                "the refresh token stays the same (no rotation)",
                "The app handles it (each refresh is a new round, accounts/refresh.py); "
                "rotation lets the backend catch a stolen refresh token (RFC 9700 §4.14.2).",
            )
        return renewed

    def sign_out(self, pair: Pair) -> None:
        response, ms = self._send("POST", conf.logout_path, pair, "both")
        if response.status_code >= 400:
            self.add(
                "sign-out",
                FAIL,
                f"POST {conf.logout_path} answered {response.status_code}",
                "The app signs out with both tokens.",
                ms,
            )
            return
        again, _ = self._send("POST", conf.refresh_path, pair, "refresh")
        if again.status_code in (200, 201):
            self.add(
                "sign-out",
                FAIL,
                f"POST {conf.logout_path} answered {response.status_code}, but the refresh "
                "token still refreshes afterwards",
                "Revoke the refresh token (its whole family) at sign-out.",
                ms,
            )
        else:
            self.add(
                "sign-out",
                PASS,
                f"{response.status_code}; the refresh token is refused afterwards "
                f"({again.status_code})",
                ms=ms,
            )

    def wrong_password(self) -> None:
        response, ms = self._login(_wrong(self._password))
        status = response.status_code
        if status == 401:
            self.add("wrong password", PASS, "401", ms=ms)
        elif status in (400, 403):
            self.add(
                "wrong password",
                WARN,
                str(status),
                "The app treats 400/401/403 alike; 401 is what clients expect.",
                ms,
            )
        else:
            self.add(
                "wrong password",
                FAIL,
                str(status),
                "Answer 401: a 5xx makes the app report the backend as down, not the "
                "password as wrong.",
                ms,
            )

    def reuse_probe(self) -> None:
        self.announce(
            "Reuse probe: signing in once more and presenting a spent refresh token on "
            "purpose; that sign-in will be revoked if the backend detects reuse."
        )
        response, _ = self._login(self._password)
        if response.status_code not in (200, 201):
            self.add("reuse detection", WARN, f"throwaway sign-in answered {response.status_code}")
            return
        first = self._pair(response, learn=False)
        if not first.refresh:
            self.add("reuse detection", WARN, "throwaway sign-in handed out no refresh token")
            return
        answer, _ = self._send("POST", conf.refresh_path, first, "refresh")
        second = self._pair(answer, learn=False)
        if not self.shape.rotates or not second.refresh or second.refresh == first.refresh:
            self.add("reuse detection", WARN, "not applicable: the backend does not rotate")
            return
        replay, ms = self._send("POST", conf.refresh_path, first, "refresh")
        if replay.status_code in (200, 201):
            self.add(
                "reuse detection",
                WARN,
                "a spent refresh token was accepted again",
                "The app never presents one twice, but a thief could: refuse a spent token "
                "and revoke its family (RFC 9700 §4.14.2).",
                ms,
            )
            return
        family, _ = self._send("POST", conf.refresh_path, second, "refresh")
        if family.status_code in (200, 201):
            self.add(
                "reuse detection",
                WARN,
                f"the spent token was refused ({replay.status_code}) but its successor still "
                "refreshes",
                "Revoke the whole family on reuse, or the thief keeps the successor.",
                ms,
            )
        else:
            self.add(
                "reuse detection",
                PASS,
                f"the spent token refused ({replay.status_code}) and the sign-in revoked",
                ms=ms,
            )

    # --- the suggested settings ---------------------------------------------------

    def suggested_env(self) -> dict[str, str]:
        shape = self.shape
        env = {
            "API_BASEURL": self.backend.base_url,
            "AUTH_LOGIN_PATH": conf.login_path,
            "AUTH_REFRESH_PATH": conf.refresh_path,
            "AUTH_LOGOUT_PATH": conf.logout_path,
            "AUTH_ME_PATH": conf.me_path,
        }
        if shape.transport:
            env[TRANSPORT_SETTING] = shape.transport
        if shape.transport in ("cookie", "bearer"):
            env["AUTH_ACCESS_COOKIE"] = shape.access_name
            env["AUTH_REFRESH_COOKIE"] = shape.refresh_name
            # Whatever Path the backend wrote: the app's copies go to every page.
            env["AUTH_COOKIE_PATH"] = "/"
            if any(
                n.startswith(("__Host-", "__Secure-"))
                for n in (shape.access_name, shape.refresh_name)
            ):
                env["AUTH_COOKIE_SECURE"] = "True"
        elif shape.transport == "body":
            env["AUTH_BODY_ACCESS_FIELD"] = shape.access_field
            env["AUTH_BODY_REFRESH_FIELD"] = shape.refresh_field or "refreshToken"
            if shape.access_lifetime is None:
                env["AUTH_BODY_ACCESS_LIFETIME"] = "1800"
            if shape.refresh_lifetime is None:
                env["AUTH_BODY_REFRESH_LIFETIME"] = "604800"  # the backend's, if it says
        if shape.too_large_for_cookies:
            env["AUTH_TOKEN_STORAGE"] = "session"  # noqa: S105 - not a password
        if shape.access_lifetime:
            # Refresh a minute early, or at half the life of a shorter token.
            leeway = min(60, math.floor(shape.access_lifetime / 2))
            env["AUTH_REFRESH_LEEWAY"] = str(max(1, leeway))
        return env

    def as_json(self) -> str:
        return json.dumps(
            {
                "ok": not self.failed,
                "checks": [asdict(check) for check in self.checks],
                "env": self.suggested_env(),
            },
            indent=2,
        )


def _pick(cookies: list[SetCookie], words: tuple[str, ...], exclude: tuple[str, ...] = ()):
    for cookie in cookies:
        lowered = cookie.name.lower()
        if any(w in lowered for w in words) and not any(w in lowered for w in exclude):
            return cookie
    return None


def _first(data: dict, names: tuple[str, ...]) -> str | None:
    return next((name for name in names if isinstance(data.get(name), str)), None)


def _json(response: requests.Response):
    try:
        return response.json()
    except ValueError:
        return None


def _split(header: str) -> list[str]:
    """Split a Set-Cookie header that holds several cookies joined with ', '.

    A comma inside `Expires=Fri, 27 Nov 2026 …` is followed by a date, not by
    `name=`, so only the joins are cut.
    """
    parts: list[str] = []
    for piece in header.split(", "):
        head = piece.split(";", 1)[0]
        name = head.split("=", 1)[0].strip()
        starts_cookie = "=" in head and name and " " not in name
        if parts and not starts_cookie:
            parts[-1] += ", " + piece
        else:
            parts.append(piece)
    return parts


def _joined(header: str) -> bool:
    """Whether a Set-Cookie header holds more than one cookie (joined with ', ')."""
    return len(_split(header)) > 1


def _cookie_problems(cookie: SetCookie, role: str) -> tuple[list[str], str]:
    problems, advice = [], []
    attributes = cookie.attributes
    if "httponly" not in attributes:
        problems.append("no HttpOnly")
        advice.append(
            "Set HttpOnly: on the backend's own origin a script could read the token "
            "(the app sets HttpOnly on its copies either way)."
        )
    if "secure" not in attributes:
        problems.append("no Secure")
        advice.append("Set Secure in production.")
    if "max-age" not in attributes and "expires" not in attributes:
        problems.append("a session cookie (no Max-Age or Expires)")
        advice.append("Give the cookie a Max-Age so its lifetime is known.")
    if not COOKIE_VALUE.match(cookie.value):
        problems.append("a value outside RFC 6265's cookie-octets")
        advice.append("Encode the token (base64url) before setting it as a cookie.")
    path = attributes.get("path")
    if isinstance(path, str) and path != "/":
        advice.append(
            f"Path={path} is fine: the app relays the {role} cookie at AUTH_COOKIE_PATH "
            "and sends it to the backend itself."
        )
    return problems, " ".join(advice)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} d"
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def _wrong(password: str) -> str:
    return password + "-not-the-password"
