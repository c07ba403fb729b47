"""The reference API throttles per (account, client) and per client (authapi/throttle.py).

Over real HTTP: the API as its own process, its callers' addresses set by
X-Forwarded-For, which it believes from 127.0.0.1 (AUTHAPI_TRUSTED_PROXIES'
default), where the web app calls it from. Each test uses addresses of its
own, so the module's one server carries nothing from test to test.
"""

import pytest
import requests

from authapi.demo import DEMO_USERS
from authapi.throttle import account_key
from tests.servers import running_authapi

ADMIN, EVALUATOR = DEMO_USERS[0], DEMO_USERS[1]
PER_ACCOUNT, PER_CLIENT = 5, 8


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    with running_authapi(
        tmp_path_factory.mktemp("hardening-api"),
        AUTHAPI_LOGIN_MAX_FAILURES_PER_ACCOUNT=str(PER_ACCOUNT),
        AUTHAPI_LOGIN_MAX_FAILURES_PER_IP=str(PER_CLIENT),
    ) as server:
        yield server


def login(api, email: str, password: str, *, client: str) -> requests.Response:
    return requests.post(
        f"{api.url}/auth/login",
        json={"email": email, "password": password},
        headers={"X-Forwarded-For": client},
        timeout=10,
    )


def test_failures_from_elsewhere_never_stop_the_owner(api):
    attacker, owner = "203.0.113.1", "198.51.100.2"
    statuses = [login(api, EVALUATOR.email, "guess", client=attacker).status_code for _ in range(6)]
    assert statuses == [401] * PER_ACCOUNT + [429]
    locked = login(api, EVALUATOR.email, EVALUATOR.password, client=attacker)
    assert locked.status_code == 429, "the guessing pair is locked, even with the right password"
    assert 1 <= int(locked.headers["Retry-After"]) <= 300

    assert login(api, EVALUATOR.email, EVALUATOR.password, client=owner).status_code == 201

    # The owner's success clears the owner's pair only: the attacker stays locked.
    assert login(api, EVALUATOR.email, "guess", client=attacker).status_code == 429


def test_one_client_guessing_many_accounts_is_stopped_and_nobody_else(api):
    guesser, other = "203.0.113.2", "198.51.100.3"
    for n in range(PER_CLIENT):
        assert login(api, f"guess{n}@example.com", "x", client=guesser).status_code == 401
    refused = login(api, ADMIN.email, ADMIN.password, client=guesser)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert login(api, ADMIN.email, ADMIN.password, client=other).status_code == 201


@pytest.mark.parametrize(
    ("client", "variants"),
    [
        # What PostgreSQL's UPPER() = UPPER() match takes for the same account.
        (
            "192.0.2.10",
            ["admin@example.com", "ADMIN@example.com", "admın@example.com", "AdMıN@Example.COM"],
        ),
        # Fullwidth letters, folded by NFKC.
        ("192.0.2.11", ["admin@example.com", "ａｄｍｉｎ@example.com"]),
    ],
)
def test_spellings_of_one_account_count_together(api, client, variants):
    spellings = [variants[n % len(variants)] for n in range(PER_ACCOUNT)]
    for spelling in spellings:
        assert login(api, spelling, "guess", client=client).status_code == 401
    for spelling in variants:
        assert login(api, spelling, "guess", client=client).status_code == 429, spelling


def test_account_key_folds_what_the_database_matches():
    assert account_key("  AdMıN@Example.COM ") == "admin@example.com"
    assert account_key("ａｄｍｉｎ@example.com") == "admin@example.com"
    assert account_key("user@exämple.com") == "user@exämple.com"
    long = account_key("\ufdfa" * 200 + "@example.com")  # NFKC: 18 characters each
    assert len(long) == 64, "hashed to fit the column, never cut"
