"""What a browser does, over real HTTP with requests: sign in, wait for expiry, send bursts."""

import re
import threading
import time

import requests

from accounts.tokens import access_token_expiry
from authapi.demo import DEMO_USERS

ADMIN = DEMO_USERS[0]


def sign_in(base_url: str) -> requests.Session:
    """Sign in as the demo admin through the app's form; return the cookie jar."""
    return sign_in_as(base_url, ADMIN)


def post_login(
    base_url: str, email: str, password: str
) -> tuple[requests.Session, requests.Response]:
    """Fill in the app's sign-in form as a browser would; return the jar and the answer."""
    browser = requests.Session()
    form = browser.get(f"{base_url}/accounts/login/", timeout=10)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)[1]
    response = browser.post(
        f"{base_url}/accounts/login/",
        data={"email": email, "password": password, "csrfmiddlewaretoken": token},
        headers={"Referer": f"{base_url}/accounts/login/"},
        allow_redirects=False,
        timeout=10,
    )
    return browser, response


def sign_in_as(base_url: str, user, *, storage: str = "cookies") -> requests.Session:
    """Sign in through the app's form, as a browser would; return the cookie jar.

    With `storage="session"` (AUTH_TOKEN_STORAGE) the jar must hold no token cookie.
    """
    browser, response = post_login(base_url, user.email, user.password)
    assert response.status_code == 302, response.text[:500]
    assert browser.cookies.get("sessionid")
    if storage == "session":
        assert not {"access_token", "refresh_token"} & set(jar_values(browser))
    else:
        assert browser.cookies.get("refresh_token")
    return browser


def wait_until_access_expired(browser: requests.Session) -> None:
    expiry = access_token_expiry(browser.cookies.get("access_token"))
    time.sleep(max(0.0, expiry.timestamp() - time.time()) + 0.3)


def burst(urls: list[str], browser: requests.Session) -> list[requests.Response]:
    """Send one request per URL at the same moment, each with a copy of the same cookies."""
    barrier = threading.Barrier(len(urls))
    results: list = [None] * len(urls)

    def worker(index: int, url: str) -> None:
        session = requests.Session()
        session.cookies.update(browser.cookies)
        barrier.wait()
        try:
            results[index] = session.get(url, timeout=30, allow_redirects=False)
        except requests.RequestException as exc:
            results[index] = exc

    threads = [threading.Thread(target=worker, args=(i, u)) for i, u in enumerate(urls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def adopt_cookies(browser: requests.Session, response: requests.Response) -> None:
    """Store the token cookies a response set, replacing the jar's (as a browser does)."""
    for name in ("access_token", "refresh_token"):
        value = response.cookies.get(name)
        if value is None:
            continue
        existing = [c for c in browser.cookies if c.name == name]
        domain = existing[0].domain if existing else ""
        for cookie in existing:
            browser.cookies.clear(cookie.domain, cookie.path, cookie.name)
        browser.cookies.set(name, value, domain=domain, path="/")


def adopt_burst_cookies(browser: requests.Session, responses: list) -> None:
    """Store the token cookies a burst's answers set, as a browser takes each answer's.

    Not every answer carries the renewed pair: one whose view made no backend
    call is answered without waiting for the refresh, and the pair reaches
    the browser on a later answer (docs/architecture.md). Answers that set
    none leave the jar as it is.
    """
    for response in responses:
        if isinstance(response, requests.Response):
            adopt_cookies(browser, response)


def sealed_pair(database, browser: requests.Session):
    """The token pair the app keeps sealed in the jar's session row (accounts/vault.py).

    Both storage modes keep one; `database` is the app's SQLite file.
    """
    import sqlite3

    from accounts import vault
    from accounts.sessions import SessionStore

    with sqlite3.connect(database) as db:
        row = db.execute(
            "SELECT session_data FROM accounts_session WHERE session_key = ?",
            (browser.cookies.get("sessionid"),),
        ).fetchone()
    assert row is not None, "the session row is gone"
    return vault.unseal(SessionStore().decode(row[0]).get(vault.SESSION_KEY))


# --- Polling, raw headers and hand-built requests (tests/test_invariants.py, test_stress.py) ---


def wait_for(predicate, *, timeout: float, interval: float = 0.1, what: str = "the condition"):
    """Poll `predicate` until it returns something truthy; return it, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_until_all_expired(browsers: list[requests.Session]) -> None:
    """Sleep until the access token of every jar has expired (by its JWT `exp`)."""
    latest = max(access_token_expiry(b.cookies.get("access_token")).timestamp() for b in browsers)
    time.sleep(max(0.0, latest - time.time()) + 0.3)


def set_cookie_headers(response: requests.Response) -> list[str]:
    """Return every raw Set-Cookie header of a response, one per cookie."""
    return response.raw.headers.getlist("Set-Cookie")


def csrf_headers(browser: requests.Session, base_url: str, page: str = "/dashboard/") -> dict:
    """Headers a same-origin form or script POST carries: the CSRF token and a Referer."""
    return {"X-CSRFToken": browser.cookies.get("csrftoken", ""), "Referer": f"{base_url}{page}"}


def sign_out(browser: requests.Session, base_url: str) -> requests.Response:
    """Press the Sign out button (POST /accounts/logout/); return the answer, not followed."""
    return browser.post(
        f"{base_url}/accounts/logout/",
        headers=csrf_headers(browser, base_url),
        allow_redirects=False,
        timeout=30,
    )


def cookie_header(values: dict[str, str]) -> str:
    """Return a Cookie header value for `values`, exactly as given."""
    return "; ".join(f"{name}={value}" for name, value in values.items())


def jar_values(browser: requests.Session) -> dict[str, str]:
    """Return the jar's cookies as a plain name -> value dict."""
    return {cookie.name: cookie.value for cookie in browser.cookies}


class RawResponse:
    """An answer to `raw_request`: status, every header (repeats kept) and the body."""

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def set_cookies(self) -> list[str]:
        return [v for k, v in self.headers if k.lower() == "set-cookie"]


def raw_request(
    base_url: str,
    method: str,
    path: str,
    *,
    cookie: bytes,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    timeout: float = 30,
) -> RawResponse:
    """Send one request whose Cookie header is the given bytes, verbatim (UTF-8 allowed).

    `requests` refuses header values outside Latin-1; browsers and proxies do
    send them, so this goes through http.client, which passes bytes through.
    """
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.putrequest(method, path)
        connection.putheader("Cookie", cookie)
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        if method != "GET":
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body if body else None)
        answer = connection.getresponse()
        return RawResponse(answer.status, answer.getheaders(), answer.read())
    finally:
        connection.close()


class RawJar(dict):
    """A browser's cookies at Path=/ for `raw_request`: updated from each answer's Set-Cookie."""

    def header(self, overrides: dict[str, str] | None = None) -> bytes:
        """Return the Cookie header (UTF-8 bytes) with `overrides` replacing or adding values."""
        values = {**self, **(overrides or {})}
        return cookie_header(values).encode("utf-8")

    def update_from(self, response: RawResponse) -> None:
        from tests.cookies import parse_set_cookie

        for header in response.set_cookies():
            cookie = parse_set_cookie(header)
            if (cookie.attr("Path") or "/") != "/":
                continue  # a browser keeps that one apart; it never comes back to our paths
            if cookie.attr("Max-Age") == "0" or (
                not cookie.value.strip('"') and "1970" in str(cookie.attr("expires"))
            ):
                self.pop(cookie.name, None)
            else:
                self[cookie.name] = cookie.value
