"""`manage.py authcheck`: does this backend fit the app, and which settings does it need?

It signs in with a real account and calls the backend through the app's own
client (AUTH_CLIENT_CLASS, built from the settings with what it has learned
so far applied over them), so what passes here works in the app: sign-in,
`/users/me`, refresh, sign-out, a wrong password and (last, on a throwaway
sign-in of its own, announced before it runs) a spent refresh token
presented again. Where the current settings do not fit, it tries the places
backends commonly use (accounts/shape.py) and keeps what works.

Each step is a `Check`: PASS, WARN, FAIL, or SKIP when what it needs did not
happen; what it saw (token values masked), what to do. `suggested_env()` is
every backend setting the app needs, as `.env` lines. Every sign-in it made
is signed out at the end. The password is only ever sent to the backend:
never printed, logged or kept in a check.
"""

import contextlib
import json
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from email.utils import parsedate_to_datetime

from django.test.utils import override_settings
from django.utils.module_loading import import_string

from .. import clock
from ..client import AuthApiClient, BackendAnswer, found_in, token_places
from ..clock import SIGNIFICANT
from ..conf import SETTINGS, conf
from ..cookies import BROWSER_LIMIT, COOKIE_VALUE, BackendCookie, relayed_size
from ..exceptions import BackendError, BackendUnavailable, Throttled
from ..shape import (
    MISSING,
    Place,
    UnreadableRoles,
    lookup,
    outline,
    paths,
    role_names,
    roles_candidates,
)
from ..tokens import Tokens, access_token_claims

PASS, WARN, FAIL, SKIP = "PASS", "WARN", "FAIL", "SKIP"
# Headers some backends read the access token from instead of Authorization (NocoDB: xc-auth).
ACCESS_HEADERS = ("xc-auth", "x-access-token", "x-auth-token")
REFRESH_FIELDS = ("refreshToken", "refresh_token")
ID_KEYS = ("id", "_id", "uuid", "userId", "user_id", "sub")
EMAIL_KEYS = ("email", "mail", "emailAddress", "username")
FIRST_KEYS = ("firstName", "first_name", "firstname", "given_name", "givenName")
LAST_KEYS = ("lastName", "last_name", "lastname", "family_name", "familyName")
# Where NestJS backends commonly keep their four endpoints: tried, in this order, when
# the configured sign-in path answers 404 (AUTH_LOGIN_PATH, _REFRESH_, _LOGOUT_, _ME_).
PATH_FAMILIES = (
    ("/auth/login", "/auth/refresh", "/auth/logout", "/users/me"),
    ("/api/v1/auth/email/login", "/api/v1/auth/refresh", "/api/v1/auth/logout", "/api/v1/auth/me"),
    (
        "/api/v1/auth/user/signin",
        "/api/v1/auth/token/refresh",
        "/api/v1/auth/user/signout",
        "/api/v1/auth/user/me",
    ),
    ("/api/auth/login", "/api/auth/refresh", "/api/auth/logout", "/api/auth/me"),
    ("/api/v1/auth/login", "/api/v1/auth/refresh", "/api/v1/auth/logout", "/api/v1/auth/me"),
    ("/auth/login", "/auth/refresh", "/auth/logout", "/auth/me"),
)
PATH_SETTINGS = ("AUTH_LOGIN_PATH", "AUTH_REFRESH_PATH", "AUTH_LOGOUT_PATH", "AUTH_ME_PATH")
# What the app shows for a wrong password (accounts/forms.py).
WRONG_PASSWORD_TEXT = "Invalid email or password"  # noqa: S105 - a message
JWT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
OPAQUE = re.compile(r"^[A-Za-z0-9_~+/=-]{20,}$")
CASES: dict[str, Callable[[str], str]] = {
    "as is": lambda s: s,
    "title": str.title,
    "upper": str.upper,
    "lower": str.lower,
    "capitalized": str.capitalize,
}


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


def mask(value) -> str:
    """A token value as authcheck shows it: its kind and length, never a character of it."""
    if not isinstance(value, str):
        return outline(value)
    kind = "JWT" if JWT.match(value) else "opaque"
    return f"<{kind}, {len(value)} chars>"


def looks_like_token(value) -> bool:
    """A JWT, or a long string of the characters opaque tokens are made of."""
    if not isinstance(value, str) or len(value) < 20:
        return False
    return bool(JWT.match(value) or OPAQUE.match(value))


@dataclass
class Learned:
    """What the checks learned beyond the settings, for `suggested_env`."""

    transport_cookies: dict[str, SetCookie] = field(default_factory=dict)
    access_lifetime: float | None = None
    refresh_lifetime: float | None = None
    access_lifetime_known: bool = True
    refresh_lifetime_known: bool = True
    skew: float = 0.0
    rotates: bool | None = None
    too_large_for_cookies: bool = False
    refresh_works: bool = False
    logout_works: bool = False


class AuthCheck:
    """Run the checks in order; `checks` holds the results, `env` the settings they found."""

    def __init__(
        self,
        base_url: str,
        email: str,
        password: str,
        *,
        destructive: bool = True,
        announce: Callable[[str], None] = lambda message: None,
    ):
        self.base_url = base_url.rstrip("/")
        self.email = email
        self._password = password
        self.destructive = destructive
        self.announce = announce
        self.checks: list[Check] = []
        self.learned = Learned()
        # Settings found so far, as .env strings, applied over the current ones.
        self.env: dict[str, str] = {}
        self._live: list[Tokens] = []  # sign-ins still alive at the backend

    def add(self, name, status, saw, advice="", ms=None) -> Check:
        check = Check(name, status, saw, advice, None if ms is None else round(ms, 1))
        self.checks.append(check)
        return check

    @property
    def failed(self) -> bool:
        return any(check.status == FAIL for check in self.checks)

    # --- the app's client, with what was learned applied -------------------------

    @contextlib.contextmanager
    def applied(self, **more: str) -> Iterator[AuthApiClient]:
        """Yield a fresh client of AUTH_CLIENT_CLASS under the settings learned so far."""
        values = {"API_BASEURL": self.base_url, **typed({**self.env, **more})}
        with override_settings(**values):
            yield import_string(conf.client_class)()

    def path(self, name: str) -> str:
        """The backend's `login`, `refresh`, `logout` or `me` path, as learned or configured."""
        return self.env.get(f"AUTH_{name.upper()}_PATH") or getattr(conf, f"{name}_path")

    def shape(self, **more: str):
        """The backend shape (accounts/shape.py) the settings learned so far describe."""
        with self.applied(**more):
            return conf.shape

    def _call(self, method, path, *, tokens=None, attach="access", json=None, **more):
        """One call through the app's client; returns (answer, ms)."""
        with self.applied(**more) as client:
            started = time.monotonic()
            answer = client.call(method, path, tokens=tokens, attach=attach, json=json)
            return answer, (time.monotonic() - started) * 1000

    # --- the run ----------------------------------------------------------------

    def run(self) -> list[Check]:
        try:
            pair = self.sign_in()
            if pair is None:
                return self.checks
            self.inspect_tokens(pair)
            self.profile(pair)
            renewed = self.refresh(pair)
            self.sign_out(renewed or pair, refreshed=renewed is not None)
            self.wrong_password()
            if not self.destructive:
                self.add("reuse detection", SKIP, "not probed (--skip-destructive)")
            elif not self.learned.refresh_works:
                self.add("reuse detection", SKIP, "not probed: no refresh worked")
            else:
                self.reuse_probe()
        except BackendUnavailable as exc:
            self.add(
                "backend reachable",
                FAIL,
                f"{exc} calling {self.base_url}",
                "Check API_BASEURL (or --base-url) and that the backend is running; an answer "
                f"slower than AUTH_BACKEND_TIMEOUT ({conf.backend_read_timeout} s) or a 5xx "
                "counts as down, as it does in the app.",
            )
        finally:
            self.sign_out_everything()
        return self.checks

    def _login(self, password: str) -> tuple[BackendAnswer, float]:
        return self._call(
            "POST", self.path("login"), json={"email": self.email, "password": password}
        )

    # --- sign-in: where the tokens come from ---------------------------------------

    def sign_in(self) -> Tokens | None:
        try:
            answer, ms = self._login(self._password)
        except Throttled as exc:
            self.add("sign-in", FAIL, f"{exc} (throttled)", "Wait, then run it again.")
            return None
        if answer.status in (404, 405):
            answer, ms = self._find_paths(answer, ms)
        self._observe_clock(answer, ms)
        if answer.status not in (200, 201):
            self.add(
                "sign-in",
                FAIL,
                f"POST {self.path('login')} answered {answer.status}: {found_in(answer)}",
                f"Check AUTH_LOGIN_PATH ({self.path('login')})."
                if answer.status in (404, 405)
                else "Check the email and password, and AUTH_LOGIN_PATH.",
                ms,
            )
            return None
        self.add("tokens seen", PASS, self._inventory(answer))
        tokens = self._learn_token_sources(answer)
        if tokens is None:
            self._check_set_cookie_headers(answer)
            self.add(
                "sign-in",
                FAIL,
                f"POST {self.path('login')} answered {answer.status} without a token pair the "
                f"app can find: {found_in(answer)}",
                "Set AUTH_ACCESS_TOKEN_FROM and AUTH_REFRESH_TOKEN_FROM (cookie:<name> or "
                "json:<dotted.path>) to where the tokens are.",
                ms,
            )
            return None
        self._live.append(tokens)
        self.add(
            "sign-in",
            PASS,
            f"{answer.status}; access token from {self.env['AUTH_ACCESS_TOKEN_FROM']}, "
            f"refresh token from {self.env['AUTH_REFRESH_TOKEN_FROM']}",
            ms=ms,
        )
        self._check_set_cookie_headers(answer)
        return tokens

    def _find_paths(self, answer: BackendAnswer, ms: float) -> tuple[BackendAnswer, float]:
        """The sign-in path is not there: try where NestJS backends commonly keep it."""
        configured = self.path("login")
        for family in PATH_FAMILIES:
            if family[0] == configured:
                continue
            self.env.update(zip(PATH_SETTINGS, family, strict=True))
            found, found_ms = self._login(self._password)
            if found.status not in (404, 405):
                self.add(
                    "paths",
                    PASS,
                    f"POST {configured} answered {answer.status}; POST {family[0]} answered "
                    f"{found.status}",
                    "The suggested settings take this backend's paths: "
                    + ", ".join(f"{k}={v}" for k, v in zip(PATH_SETTINGS, family, strict=True))
                    + "; check the refresh, sign-out and profile paths below.",
                )
                return found, found_ms
        for setting in PATH_SETTINGS:
            self.env.pop(setting, None)
        return answer, ms

    def _inventory(self, answer: BackendAnswer) -> str:
        """Every cookie and every token-looking JSON field of an answer, values masked."""
        cookies = [c for c in map(parse_cookie_header, _all_set_cookies(answer)) if c]
        shown = [f"cookie {c.summary()} = {mask(c.value)}" for c in cookies]
        data = answer.data
        for path, value in paths(data) if isinstance(data, dict) else ():
            if looks_like_token(value):
                shown.append(f"JSON {path} = {mask(value)}")
        self.learned.transport_cookies = {c.name: c for c in cookies}
        return (
            "; ".join(shown) or f"no cookies and no token-looking JSON field ({found_in(answer)})"
        )

    def _learn_token_sources(self, answer: BackendAnswer) -> Tokens | None:
        """Find the settings that read both tokens from a sign-in answer; return the pair."""
        shape = self.shape()
        access_places = _unique([str(shape.access_from), *token_places(answer, "access")])
        refresh_places = _unique([str(shape.refresh_from), *token_places(answer, "refresh")])
        for access in access_places:
            for refresh in refresh_places:
                if access == refresh:
                    continue
                env = {"AUTH_ACCESS_TOKEN_FROM": access, "AUTH_REFRESH_TOKEN_FROM": refresh}
                with self.applied(**env) as client:
                    try:
                        tokens = Tokens().updated_by(client.tokens_from(answer, "login"))
                    except BackendError:
                        continue
                if tokens.access and tokens.refresh:
                    self.env.update(env)
                    self._name_app_cookies(access, refresh)
                    return tokens
        return None

    def _name_app_cookies(self, access: str, refresh: str) -> None:
        """The app's own cookies keep the backend's names, when the tokens came as cookies."""
        for setting, source in (("AUTH_ACCESS_COOKIE", access), ("AUTH_REFRESH_COOKIE", refresh)):
            place = Place.parse(source, setting=setting, kinds=("cookie", "json"))
            if place.kind == "cookie":
                self.env[setting] = place.name
            else:
                default = "access_token" if setting == "AUTH_ACCESS_COOKIE" else "refresh_token"
                self.env[setting] = default
        if self.env["AUTH_ACCESS_COOKIE"] == self.env["AUTH_REFRESH_COOKIE"]:
            self.env["AUTH_ACCESS_COOKIE"] = "access_token"
            self.env["AUTH_REFRESH_COOKIE"] = "refresh_token"

    def _check_set_cookie_headers(self, answer: BackendAnswer) -> None:
        headers = list(answer.set_cookie_headers)
        if not headers:
            return
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

    # --- what the tokens say ---------------------------------------------------------

    def inspect_tokens(self, pair: Tokens) -> None:
        learned = self.learned
        for role in ("access", "refresh"):
            source = Place.parse(
                self.env[f"AUTH_{role.upper()}_TOKEN_FROM"], setting="", kinds=("cookie", "json")
            )
            cookie = learned.transport_cookies.get(source.name) if source.kind == "cookie" else None
            if cookie is not None:
                problems, advice = _cookie_problems(cookie, role)
                self.add(
                    f"{role} cookie",
                    WARN if problems else PASS,
                    cookie.summary() + ("; " + "; ".join(problems) if problems else ""),
                    advice,
                )
            token = pair.access if role == "access" else pair.refresh
            lifetime = self._lifetime(token, cookie)
            setattr(learned, f"{role}_lifetime", lifetime)
            setattr(learned, f"{role}_lifetime_known", lifetime is not None)
        access, refresh = learned.access_lifetime, learned.refresh_lifetime
        seen = f"access {_duration(access)}, refresh {_duration(refresh)}"
        if access is None:
            self.add(
                "token lifetimes",
                WARN,
                seen,
                "No Max-Age, Expires or JWT exp: the app takes AUTH_BODY_ACCESS_LIFETIME "
                "(set it to the access token's lifetime) and refreshes on the backend's 401.",
            )
        elif refresh is None:
            self.add(
                "token lifetimes",
                WARN,
                seen,
                "Set AUTH_BODY_REFRESH_LIFETIME to the refresh token's lifetime: the app "
                "keeps the session that long.",
            )
        else:
            self.add("token lifetimes", PASS, seen)
        self._check_cookie_sizes(pair)
        claims = access_token_claims(pair.access) or {}
        skew = learned.skew
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

    def _check_cookie_sizes(self, pair: Tokens) -> None:
        """In cookie mode the app keeps each token as a cookie: would a browser keep it?"""
        learned = self.learned
        sizes = []
        for name, token, lifetime in (
            (self.env["AUTH_ACCESS_COOKIE"], pair.access, learned.access_lifetime),
            (self.env["AUTH_REFRESH_COOKIE"], pair.refresh, learned.refresh_lifetime),
        ):
            max_age = int(lifetime) if lifetime else None
            cookie = BackendCookie(name=name, value=token, max_age=max_age)
            sizes.append((relayed_size(cookie), name))
        size, name = max(sizes)
        if size > BROWSER_LIMIT:
            learned.too_large_for_cookies = True
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
                    known.append(expires - self.learned.skew - time.time())
                except (TypeError, ValueError):
                    pass
        exp = (access_token_claims(token) or {}).get("exp")
        if isinstance(exp, int | float) and not isinstance(exp, bool):
            known.append(exp - self.learned.skew - time.time())
        return min(known) if known else None

    def _observe_clock(self, answer: BackendAnswer, ms: float) -> None:
        received_at = time.time()
        measured = clock.measure(
            answer.headers.get("Date"), sent_at=received_at - ms / 1000, received_at=received_at
        )
        if measured is not None:
            self.learned.skew = measured

    # --- /users/me: how the access token goes out, where the user is -----------------

    def profile(self, pair: Tokens) -> None:
        found = self._learn_access_to(pair)
        if found is None:
            return
        answer, ms, tried = found
        data = answer.data
        self._learn_profile_paths(data, pair)
        with self.applied() as client:
            try:
                profile = client.profile_from(data, access_token=pair.access)
            except BackendError as exc:
                self.add(
                    "profile",
                    FAIL,
                    f"GET {self.path('me')} answered {outline(data)}: {exc}",
                    "Set the AUTH_ME_* settings to where it keeps id, email and roles.",
                    ms,
                )
                return
        name = f"{profile.first_name} {profile.last_name}".strip()
        shown = f"name {name!r}" if name else "no name found (the app shows the email)"
        roles_from = (
            f"the access token's {self.env['AUTH_TOKEN_ROLES_CLAIM']!r} claim"
            if self.env.get("AUTH_ROLES_FROM") == "token"
            else repr(self.env["AUTH_ME_ROLES_PATH"])
        )
        self.add(
            "profile",
            PASS,
            f"access token sent as {self.env['AUTH_ACCESS_TOKEN_TO']}{tried}; "
            f"{outline(data)}; id at {self.env['AUTH_ME_ID_PATH']!r}, email at "
            f"{self.env['AUTH_ME_EMAIL_PATH']!r}, {shown}, roles {list(profile.roles)} "
            f"from {roles_from}",
            ms=ms,
        )
        self._propose_roles(profile.roles)

    def _learn_access_to(self, pair: Tokens):
        """Send the access token each way it commonly goes until `/users/me` says who it is."""
        shape = self.shape()
        source = Place.parse(
            self.env["AUTH_ACCESS_TOKEN_FROM"], setting="", kinds=("cookie", "json")
        )
        guesses = [str(shape.access_to), "bearer"]
        if source.kind == "cookie":
            guesses.append(str(source))
        guesses += [f"header:{name}" for name in ACCESS_HEADERS]
        baseline, _ = self._call("GET", self.path("me"))
        refused = []
        for place in _unique(guesses):
            answer, ms = self._call(
                "GET",
                self.path("me"),
                tokens=Tokens(access=pair.access),
                AUTH_ACCESS_TOKEN_TO=place,
            )
            if _knows_the_user(answer, baseline):
                self.env["AUTH_ACCESS_TOKEN_TO"] = place
                tried = f" (not taken as {', '.join(refused)})" if refused else ""
                return answer, ms, tried
            refused.append(f"{place}: {answer.status}")
        self.add(
            "profile",
            FAIL,
            f"GET {self.path('me')} never said who the token belongs to; tried "
            + ", ".join(refused),
            "Check AUTH_ME_PATH, and set AUTH_ACCESS_TOKEN_TO to how the backend reads the "
            "access token (cookie:<name>, bearer or header:<name>).",
        )
        return None

    def _learn_profile_paths(self, data, pair: Tokens) -> None:
        env = self.env
        env["AUTH_ME_ID_PATH"] = _path_or(data, conf.me_id_path, ID_KEYS, scalar=True)
        env["AUTH_ME_EMAIL_PATH"] = _path_or(data, conf.me_email_path, EMAIL_KEYS)
        env["AUTH_ME_FIRST_NAME_PATH"] = _path_or(data, conf.me_first_name_path, FIRST_KEYS)
        env["AUTH_ME_LAST_NAME_PATH"] = _path_or(data, conf.me_last_name_path, LAST_KEYS)
        env["AUTH_ROLE_NAME_KEY"] = conf.role_name_key
        env["AUTH_TOKEN_ROLES_CLAIM"] = conf.token_roles_claim
        claims = access_token_claims(pair.access) or {}
        in_me = _readable_roles(data, conf.me_roles_path)
        in_token = _readable_roles(claims, conf.token_roles_claim)
        if conf.roles_from == "token" and in_token:
            env["AUTH_ROLES_FROM"], env["AUTH_ME_ROLES_PATH"] = "token", conf.me_roles_path
        elif in_me:
            env["AUTH_ROLES_FROM"], env["AUTH_ME_ROLES_PATH"] = "me", conf.me_roles_path
        elif candidates := roles_candidates(data):
            env["AUTH_ROLES_FROM"], env["AUTH_ME_ROLES_PATH"] = "me", candidates[0]
        elif in_token or (candidates := roles_candidates(claims)):
            env["AUTH_ROLES_FROM"], env["AUTH_ME_ROLES_PATH"] = "token", conf.me_roles_path
            if not in_token:
                env["AUTH_TOKEN_ROLES_CLAIM"] = candidates[0]
        else:
            env["AUTH_ROLES_FROM"], env["AUTH_ME_ROLES_PATH"] = "me", conf.me_roles_path

    def _propose_roles(self, roles: tuple[str, ...]) -> None:
        """AUTH_ALLOWED_ROLES (and the superuser and demo roles) as the backend spells them."""
        wanted = list(conf.allowed_roles_list)
        held = {role.casefold(): role for role in roles}
        matched = [role for role in wanted if role.casefold() in held]
        if not matched:
            # The account checked with is taken as the one that should get in, and
            # see the demo's pages; never as a superuser: that stays the operator's call.
            self.env["AUTH_ALLOWED_ROLES"] = ",".join(roles)
            from django.conf import settings

            for setting in ("DEMO_ADMIN_ROLES", "DEMO_EVALUATION_ROLES"):
                if hasattr(settings, setting) and roles:
                    self.env[setting] = ",".join(roles)
            self.add(
                "allowed roles",
                WARN,
                f"roles {list(roles)} share none with AUTH_ALLOWED_ROLES ({', '.join(wanted)})",
                "This account would be refused by the app. The suggested settings allow its "
                "roles (and open the demo's pages to them); set AUTH_ALLOWED_ROLES to the roles "
                "that may sign in, and AUTH_SUPERUSER_ROLES to those that administer.",
            )
            return
        case = next(
            (
                name
                for name, spell in CASES.items()
                if all(spell(role) == held[role.casefold()] for role in matched)
            ),
            None,
        )
        if case is None:
            self.env["AUTH_ROLES_CASE_INSENSITIVE"] = "True"
            spell = CASES["as is"]
        else:
            spell = CASES[case]
        self.env["AUTH_ALLOWED_ROLES"] = ",".join(spell(role) for role in wanted)
        self.env["AUTH_SUPERUSER_ROLES"] = ",".join(
            spell(role) for role in conf.superuser_roles_list
        )
        from django.conf import settings

        for setting in ("DEMO_ADMIN_ROLES", "DEMO_EVALUATION_ROLES"):
            if hasattr(settings, setting):
                self.env[setting] = ",".join(spell(role) for role in getattr(settings, setting))
        spelled = "" if case == "as is" else f" (spelled {case}, as the backend does)"
        self.add(
            "allowed roles",
            PASS,
            f"roles {list(roles)} share {', '.join(held[r.casefold()] for r in matched)} with "
            f"AUTH_ALLOWED_ROLES{spelled}",
        )

    # --- refresh: how the refresh token goes out -------------------------------------

    def refresh(self, pair: Tokens) -> Tokens | None:
        source = Place.parse(
            self.env["AUTH_REFRESH_TOKEN_FROM"], setting="", kinds=("cookie", "json")
        )
        guesses = [str(self.shape().refresh_to), str(source), "bearer"]
        guesses += [f"json:{name}" for name in REFRESH_FIELDS]
        refused = []
        for place in _unique(guesses):
            answer, ms = self._call(
                "POST",
                self.path("refresh"),
                tokens=Tokens(refresh=pair.refresh),
                attach="refresh",
                AUTH_REFRESH_TOKEN_TO=place,
            )
            if answer.status in (200, 201):
                self.env["AUTH_REFRESH_TOKEN_TO"] = place
                return self._refreshed(answer, pair, ms, refused)
            refused.append(f"{place}: {answer.status}")
            if answer.status not in (400, 401, 403, 404, 415, 422):
                break
        self.add(
            "refresh",
            FAIL,
            f"POST {self.path('refresh')} refused the refresh token every way it was sent: "
            + ", ".join(refused),
            "Check AUTH_REFRESH_PATH, and set AUTH_REFRESH_TOKEN_TO to how the backend reads "
            "the refresh token (cookie:<name>, bearer, header:<name> or json:<path>).",
        )
        return None

    def _refreshed(self, answer, pair: Tokens, ms: float, refused: list[str]) -> Tokens | None:
        with self.applied() as client:
            try:
                renewed, problem = Tokens().updated_by(client.tokens_from(answer, "refresh")), ""
            except BackendError as exc:
                renewed, problem = Tokens(), str(exc)
        if not renewed.access:
            self.add(
                "refresh",
                FAIL,
                f"POST {self.path('refresh')} answered {answer.status} without a new access token "
                f"at {self.env['AUTH_ACCESS_TOKEN_FROM']}: {problem or found_in(answer)}",
                "A refresh must answer a new access token where the sign-in did.",
                ms,
            )
            return None
        self.learned.refresh_works = True
        tried = f" (refused as {', '.join(refused)})" if refused else ""
        self.add(
            "refresh",
            PASS,
            f"{answer.status}, a new access token; the refresh token sent as "
            f"{self.env['AUTH_REFRESH_TOKEN_TO']}{tried}",
            ms=ms,
        )
        if renewed.refresh and renewed.refresh != pair.refresh:
            self.learned.rotates = True
            self.add("rotation", PASS, "each refresh hands out a new refresh token")
        else:
            self.learned.rotates = False
            renewed = Tokens(access=renewed.access, refresh=pair.refresh)
            self.add(
                "rotation",
                WARN,
                "the refresh token stays the same (no rotation)",
                "The app handles it (each refresh is a new round, accounts/refresh.py); "
                "rotation lets the backend catch a stolen refresh token (RFC 9700 §4.14.2).",
            )
        self._replace_live(pair, renewed)
        return renewed

    def _try_refresh(self, tokens: Tokens) -> tuple[BackendAnswer, Tokens]:
        """Refresh as the app would; return the answer and the pair alive afterwards."""
        answer, _ = self._call(
            "POST", self.path("refresh"), tokens=Tokens(refresh=tokens.refresh), attach="refresh"
        )
        if answer.status not in (200, 201):
            return answer, tokens
        with self.applied() as client:
            try:
                renewed = tokens.updated_by(client.tokens_from(answer, "refresh"))
            except BackendError:
                return answer, tokens
        self._replace_live(tokens, renewed)
        return answer, renewed

    # --- sign-out ----------------------------------------------------------------------

    def sign_out(self, pair: Tokens, *, refreshed: bool) -> None:
        shape_env = self._logout_guesses()
        answers = []
        for env in shape_env:
            answer, ms = self._call(
                "POST", self.path("logout"), tokens=pair, attach="logout", **env
            )
            answers.append(f"{_sent(env)}: {answer.status}")
            if answer.status >= 400:
                continue
            if not refreshed:
                self.env.update(env)
                self._forget_live(pair)
                self.add(
                    "sign-out",
                    SKIP,
                    f"POST {self.path('logout')} answered {answer.status} ({_sent(env)}); "
                    "whether it revokes cannot be seen: no refresh worked",
                    ms=ms,
                )
                return
            again, pair = self._try_refresh(pair)
            if again.status not in (200, 201):
                self.env.update(env)
                self.learned.logout_works = True
                self._forget_live(pair)
                self.add(
                    "sign-out",
                    PASS,
                    f"{answer.status} ({_sent(env)}); the refresh token is refused afterwards "
                    f"({again.status})",
                    ms=ms,
                )
                return
        self.add(
            "sign-out",
            FAIL,
            f"POST {self.path('logout')}: "
            + (
                "; ".join(answers)
                + (" but the refresh token still refreshes afterwards" if refreshed else "")
            ),
            "Revoke the refresh token (its whole family) at sign-out; if the backend wants the "
            "tokens another way, set AUTH_LOGOUT_ACCESS_TOKEN_TO / AUTH_LOGOUT_REFRESH_TOKEN_TO.",
        )

    def _logout_guesses(self) -> list[dict[str, str]]:
        shape = self.shape()
        both = {
            "AUTH_LOGOUT_ACCESS_TOKEN_TO": str(shape.logout_access_to),
            "AUTH_LOGOUT_REFRESH_TOKEN_TO": str(shape.logout_refresh_to),
        }
        access_only = {
            "AUTH_LOGOUT_ACCESS_TOKEN_TO": str(shape.access_to),
            "AUTH_LOGOUT_REFRESH_TOKEN_TO": "none",
        }
        refresh_only = {
            "AUTH_LOGOUT_ACCESS_TOKEN_TO": "none",
            "AUTH_LOGOUT_REFRESH_TOKEN_TO": str(shape.refresh_to),
        }
        guesses = []
        for env in (both, access_only, refresh_only):
            if env not in guesses:
                guesses.append(env)
        return guesses

    def sign_out_everything(self) -> None:
        """Sign out every sign-in this run made that is still alive at the backend."""
        for tokens in list(self._live):
            with contextlib.suppress(BackendError), self.applied() as client:
                client.call("POST", self.path("logout"), tokens=tokens, attach="logout")
            self._forget_live(tokens)

    def _replace_live(self, old: Tokens, new: Tokens) -> None:
        self._live = [new if t == old else t for t in self._live]
        if new not in self._live:
            self._live.append(new)

    def _forget_live(self, tokens: Tokens) -> None:
        self._live = [t for t in self._live if t != tokens]

    # --- a wrong password --------------------------------------------------------------

    def wrong_password(self) -> None:
        try:
            answer, ms = self._login(_wrong(self._password))
        except Throttled:
            self.add(
                "wrong password",
                WARN,
                "429",
                "Throttled before it could be tried; the app shows “Too many sign-in "
                "attempts” for a 429.",
            )
            return
        except BackendUnavailable as exc:
            self.add(
                "wrong password",
                FAIL,
                str(exc),
                "Answer a wrong password with 401 (or 400, 403, 422): a 5xx makes the app show "
                "“Sign-in service unavailable”, as if the backend were down.",
            )
            return
        status = answer.status
        invalid = {int(s) for s in self.env.get("AUTH_LOGIN_INVALID_STATUSES", "").split(",") if s}
        invalid |= set(conf.shape.invalid_login_statuses)
        if status in invalid:
            self.env["AUTH_LOGIN_INVALID_STATUSES"] = ",".join(map(str, sorted(invalid)))
            self.add(
                "wrong password",
                PASS,
                f"{status}: the app shows “{WRONG_PASSWORD_TEXT}”",
                ms=ms,
            )
        elif status in (200, 201):
            with self.applied() as client, contextlib.suppress(BackendError):
                self._live.append(Tokens().updated_by(client.tokens_from(answer, "login")))
            self.add("wrong password", FAIL, f"{status}: a wrong password signed in", "", ms)
        elif 400 <= status < 500 and status not in (404, 405):
            invalid.add(status)
            self.env["AUTH_LOGIN_INVALID_STATUSES"] = ",".join(map(str, sorted(invalid)))
            self.add(
                "wrong password",
                WARN,
                f"{status}: with the suggested AUTH_LOGIN_INVALID_STATUSES the app shows "
                f"“{WRONG_PASSWORD_TEXT}”",
                f"Without it the app would show “Sign-in could not be completed” (502); "
                f"the suggested settings add {status}.",
                ms,
            )
        else:
            self.add(
                "wrong password",
                FAIL,
                f"{status}: the app would show “Sign-in could not be completed” (502)",
                "Answer 401 (or 400, 403, 422) to a wrong password.",
                ms,
            )

    # --- reuse of a spent refresh token ------------------------------------------------

    def reuse_probe(self) -> None:
        self.announce(
            "Reuse probe: signing in once more and presenting a spent refresh token on "
            "purpose; that sign-in will be revoked if the backend detects reuse, and signed "
            "out at the end either way."
        )
        answer, _ = self._login(self._password)
        if answer.status not in (200, 201):
            self.add("reuse detection", SKIP, f"throwaway sign-in answered {answer.status}")
            return
        with self.applied() as client:
            first = Tokens().updated_by(client.tokens_from(answer, "login"))
        self._live.append(first)
        if not first.refresh:
            self.add("reuse detection", SKIP, "throwaway sign-in handed out no refresh token")
            return
        _, second = self._try_refresh(first)
        if not self.learned.rotates or not second.refresh or second.refresh == first.refresh:
            self.add("reuse detection", SKIP, "not applicable: the backend does not rotate")
            return
        replay, ms = self._call(
            "POST", self.path("refresh"), tokens=Tokens(refresh=first.refresh), attach="refresh"
        )
        if replay.status in (200, 201):
            self.add(
                "reuse detection",
                WARN,
                "a spent refresh token was accepted again",
                "The app never presents one twice, but a thief could: refuse a spent token "
                "and revoke its family (RFC 9700 §4.14.2).",
                ms,
            )
            return
        family, _ = self._try_refresh(second)
        if family.status in (200, 201):
            self.add(
                "reuse detection",
                WARN,
                f"the spent token was refused ({replay.status}) but its successor still refreshes",
                "Revoke the whole family on reuse, or the thief keeps the successor.",
                ms,
            )
        else:
            self.add(
                "reuse detection",
                PASS,
                f"the spent token refused ({replay.status}) and the sign-in revoked",
                ms=ms,
            )

    # --- the suggested settings ---------------------------------------------------

    def suggested_env(self) -> dict[str, str]:
        """Every backend setting the app needs, as `.env` values."""
        env = {
            "API_BASEURL": self.base_url,
            "AUTH_LOGIN_PATH": self.path("login"),
            "AUTH_REFRESH_PATH": self.path("refresh"),
            "AUTH_LOGOUT_PATH": self.path("logout"),
            "AUTH_ME_PATH": self.path("me"),
            "AUTH_HEALTH_PATH": self.path("me"),
        }
        learned = self.env
        if "AUTH_ACCESS_TOKEN_FROM" in learned:
            access_from = learned["AUTH_ACCESS_TOKEN_FROM"]
            refresh_from = learned["AUTH_REFRESH_TOKEN_FROM"]
            both_json = access_from.startswith("json:") and refresh_from.startswith("json:")
            access_to = learned.get("AUTH_ACCESS_TOKEN_TO", "")
            env["AUTH_BACKEND_TOKEN_TRANSPORT"] = (
                "body" if both_json else "bearer" if access_to == "bearer" else "cookie"
            )
            if both_json:
                env["AUTH_BODY_ACCESS_FIELD"] = access_from.partition(":")[2]
                env["AUTH_BODY_REFRESH_FIELD"] = refresh_from.partition(":")[2]
        env.update(learned)
        # Tokens whose lifetime nothing says live as long as these (the backend's, if it says).
        if not self.learned.access_lifetime_known:
            env["AUTH_BODY_ACCESS_LIFETIME"] = str(conf.body_access_lifetime)
        if not self.learned.refresh_lifetime_known:
            env["AUTH_BODY_REFRESH_LIFETIME"] = str(conf.body_refresh_lifetime)
        if any(
            n.startswith(("__Host-", "__Secure-"))
            for n in (env.get("AUTH_ACCESS_COOKIE", ""), env.get("AUTH_REFRESH_COOKIE", ""))
        ):
            env["AUTH_COOKIE_SECURE"] = "True"
        # Whatever Path the backend wrote: the app's copies go to every page.
        env["AUTH_COOKIE_PATH"] = "/"
        if self.learned.too_large_for_cookies:
            env["AUTH_TOKEN_STORAGE"] = "session"  # noqa: S105 - not a password
        if self.learned.access_lifetime:
            # Refresh a minute early, or at half the life of a shorter token.
            leeway = min(60, math.floor(self.learned.access_lifetime / 2))
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


def typed(env: dict[str, str]) -> dict:
    """`.env` strings as the settings hold them (lists, bools, numbers), by each default's type."""
    by_name = {setting.name: setting for setting in SETTINGS}
    values = {}
    for name, raw in env.items():
        setting = by_name.get(name)
        default = setting.default if setting else None
        if isinstance(default, bool):
            values[name] = raw.strip().lower() in ("true", "1", "yes", "on")
        elif isinstance(default, int):
            values[name] = int(raw)
        elif isinstance(default, float):
            values[name] = float(raw)
        elif isinstance(default, list | tuple) or name.startswith("DEMO_"):
            values[name] = [part.strip() for part in raw.split(",") if part.strip()]
        else:
            values[name] = raw
    return values


def _knows_the_user(answer: BackendAnswer, baseline: BackendAnswer) -> bool:
    """Whether a `/users/me` answer names a user, unlike the answer to no token at all."""
    data = answer.data
    if answer.status != 200 or not isinstance(data, dict):
        return False
    if baseline.status == 200 and baseline.data == data:
        return False  # the guest answer again
    return bool(_find(data, (conf.me_id_path, *ID_KEYS), scalar=True))


def _find(data, keys: tuple[str, ...], *, scalar: bool = False) -> str | None:
    """The first path whose last key is one of `keys` (exact paths first), holding a value."""
    for key in keys:
        value = lookup(data, key)
        if value is not MISSING and value not in (None, "") and _is_scalar(value, scalar):
            return key
    for path, value in sorted(paths(data), key=lambda item: item[0].count(".")):
        if (
            path.rsplit(".", 1)[-1] in keys
            and value not in (None, "")
            and _is_scalar(value, scalar)
        ):
            return path
    return None


def _is_scalar(value, required: bool) -> bool:
    if not required:
        return isinstance(value, str)
    return isinstance(value, int | str) and not isinstance(value, bool)


def _path_or(data, configured: str, keys: tuple[str, ...], *, scalar: bool = False) -> str:
    """The configured path if it holds a value, else the best-looking one, else the configured."""
    value = lookup(data, configured)
    if value is not MISSING and value not in (None, "") and _is_scalar(value, scalar):
        return configured
    return _find(data, keys, scalar=scalar) or configured


def _readable_roles(data, path: str) -> bool:
    value = lookup(data, path) if isinstance(data, dict) else MISSING
    if value is MISSING:
        return False
    try:
        role_names(value, name_key=conf.role_name_key)
    except UnreadableRoles:
        return False
    return True


def _sent(env: dict[str, str]) -> str:
    access, refresh = env["AUTH_LOGOUT_ACCESS_TOKEN_TO"], env["AUTH_LOGOUT_REFRESH_TOKEN_TO"]
    return f"access token as {access}, refresh token as {refresh}"


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _all_set_cookies(answer: BackendAnswer) -> list[str]:
    return [part for header in answer.set_cookie_headers for part in _split(header)]


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
            f"Path={path} is fine: the app keeps the {role} cookie at AUTH_COOKIE_PATH "
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
