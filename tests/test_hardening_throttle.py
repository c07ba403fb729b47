"""The app's sign-in throttle counts every spelling of an email as one (accounts/throttle.py).

A backend on PostgreSQL matching emails with `UPPER(a) = UPPER(b)` signs
`admın@example.com` (dotless ı) in as `admin@example.com`; counted apart,
each spelling would get AUTH_LOGIN_MAX_FAILURES guesses of its own.
"""

import pytest

from accounts.throttle import counted_email
from tests import fakes
from tests.fakes import calls_to

LOGIN = "/accounts/login/"


@pytest.fixture
def api(backend):
    """A backend that refuses every password, and matches emails loosely."""
    backend.add("POST", f"{fakes.BASE}/auth/login", status=401, json={"message": "no"})
    return backend


@pytest.mark.parametrize(
    "spellings",
    [
        ["admin@example.com", "admın@example.com", "ADMIN@example.com", "AdMıN@Example.COM"],
        ["admin@example.com", " admin@EXAMPLE.com ", "Admın@example.com"],
    ],
)
def test_spellings_of_one_email_share_its_counters(client, db, api, spellings):
    for n in range(5):  # AUTH_LOGIN_MAX_FAILURES
        form = {"email": spellings[n % len(spellings)], "password": "guess"}
        assert client.post(LOGIN, form).status_code == 200

    for spelling in spellings:
        response = client.post(LOGIN, {"email": spelling, "password": "guess"})
        assert response.status_code == 429, spelling
    assert len(calls_to(api, "/auth/login")) == 5, "the variants never reached the backend"


def test_another_email_from_the_same_client_still_tries(client, db, api):
    for _ in range(5):
        client.post(LOGIN, {"email": "admın@example.com", "password": "guess"})
    other = client.post(LOGIN, {"email": "evaluator@example.com", "password": "x"})
    assert other.status_code == 200


@pytest.mark.parametrize(
    ("spelling", "counted"),
    [
        ("  AdMıN@Example.COM ", "admin@example.com"),
        ("ａｄｍｉｎ@example.com", "admin@example.com"),
        ("user@exämple.com", "user@exämple.com"),
        ("user@EXÄMPLE.com", "user@exämple.com"),
    ],
)
def test_counted_email(spelling, counted):
    assert counted_email(spelling) == counted
