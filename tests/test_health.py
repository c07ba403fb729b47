"""accounts/ops/health.py: the one backend probe, read by `/healthz` and by the health page."""

import re

import pytest
import requests

from accounts.ops import health
from tests import fakes


@pytest.fixture
def admin(client, db, locmem_cache, backend):
    return fakes.sign_in_client(client, "admin", access=fakes.access_jwt())


def backend_line(html: str) -> str:
    return re.search(r'<dd id="backend-health">(.*?)</dd>', html, re.S)[1]


@pytest.mark.parametrize(
    ("answer", "state", "http_status", "failure"),
    [
        ({"status": 200, "json": {}}, "ok", 200, ""),
        ({"status": 401, "json": {}}, "ok", 401, ""),
        ({"status": 503}, "unavailable", None, "GET /users/me answered 503"),
        ({"status": 429}, "unavailable", None, "GET /users/me answered 429"),
        (
            {"body": requests.ConnectionError()},
            "unavailable",
            None,
            "GET /users/me: ConnectionError",
        ),
        ({"body": requests.ReadTimeout()}, "unavailable", None, "GET /users/me: ReadTimeout"),
    ],
    ids=["200", "401", "503", "429", "refused", "timeout"],
)
def test_the_probe_says_the_state_the_status_how_long_and_what_failed(
    backend, db, answer, state, http_status, failure
):
    backend.get(f"{fakes.BASE}/users/me", **answer)

    result = health.backend_health()

    assert (result.state, result.http_status, result.failure) == (state, http_status, failure)
    assert result.ok is (state == "ok")
    assert 0 <= result.seconds < 5 and result.milliseconds == round(result.seconds * 1000)


def test_the_probe_waits_auth_health_timeout(backend, db, settings, monkeypatch):
    from accounts.client import get_client

    settings.AUTH_HEALTH_TIMEOUT = 0.75
    seen = fakes.spy_on(monkeypatch, get_client().session)
    backend.get(f"{fakes.BASE}/users/me", status=200, json={})

    assert health.backend_health().ok
    assert seen[0]["timeout"] == 0.75


def test_healthz_and_the_health_page_ask_the_backend_through_one_probe(admin, backend, monkeypatch):
    results = []

    def probe():
        results.append(real())
        return results[-1]

    real = health.backend_health
    monkeypatch.setattr(health, "backend_health", probe)
    backend.get(f"{fakes.BASE}/users/me", status=503)

    page = admin.get("/dashboard/admin/").content.decode()
    healthz = admin.get("/healthz")

    assert len(results) == 2  # one probe each, and nothing else asked the backend
    assert len(fakes.calls_to(backend, "/users/me")) == 2
    assert (healthz.status_code, healthz.json()["backend"]) == (503, "unavailable")
    line = backend_line(page)
    assert re.fullmatch(
        r'<span class="health-state down">down</span> '
        r"\(GET /users/me answered 503; after \d+ ms\)",
        line,
    ), line


def test_a_401_is_up_on_healthz_and_reachable_on_the_page(admin, backend):
    backend.get(f"{fakes.BASE}/users/me", status=401, json={"message": "no"})

    page = admin.get("/dashboard/admin/").content.decode()
    healthz = admin.get("/healthz")

    assert (healthz.status_code, healthz.json()["backend"]) == (200, "ok")
    assert re.search(r">reachable</span> \(HTTP 401 in \d+ ms:", backend_line(page))
