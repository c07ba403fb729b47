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


def sign_in_as(base_url: str, user) -> requests.Session:
    """Sign in through the app's form, as a browser would; return the cookie jar."""
    browser, response = post_login(base_url, user.email, user.password)
    assert response.status_code == 302, response.text[:500]
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
