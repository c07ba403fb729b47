"""Backend calls are labelled by purpose, not by path (accounts/client.py, accounts/ops/metrics.py).

AUTH_HEALTH_PATH is AUTH_ME_PATH by default: matched by path, every profile
read was counted as a health check.
"""

import pytest

from accounts.client import AuthApiClient
from tests import fakes
from tests.test_metrics import samples, total


@pytest.fixture
def metrics_on(settings):
    settings.AUTH_METRICS = True
    settings.AUTH_HEALTH_PATH = settings.AUTH_ME_PATH = "/users/me"


def backend_calls(client) -> dict:
    return samples(client.get("/metrics").content.decode())


@pytest.mark.usefixtures("metrics_on")
def test_a_profile_read_on_the_health_path_counts_as_me(client, db, locmem_cache, backend):
    before = backend_calls(client)
    fakes.stub_login(backend)
    fakes.stub_me(backend, "admin")
    response = client.post("/accounts/login/", {"email": "admin@example.com", "password": "pw"})
    assert response.status_code == 302
    after = backend_calls(client)

    def grew(endpoint: str) -> float:
        name = "auth_backend_requests_total"
        return total(after, name, endpoint=endpoint) - total(before, name, endpoint=endpoint)

    assert (grew("login"), grew("me"), grew("health")) == (1, 1, 0)


@pytest.mark.usefixtures("metrics_on")
def test_a_health_check_on_the_profile_path_counts_as_health(client, db, backend):
    before = backend_calls(client)
    backend.get(f"{fakes.BASE}/users/me", status=401, json={"message": "no"})

    AuthApiClient().ping()

    after = backend_calls(client)
    name = "auth_backend_requests_total"
    assert total(after, name, endpoint="health") - total(before, name, endpoint="health") == 1
    assert total(after, name, endpoint="me") == total(before, name, endpoint="me")


@pytest.mark.usefixtures("metrics_on")
def test_a_call_without_a_purpose_is_looked_up_by_path(client, db, backend):
    """`authcheck` calls through `call()` without one; a shared path reads as the profile."""
    before = backend_calls(client)
    backend.get(f"{fakes.BASE}/users/me", status=401, json={"message": "no"})
    backend.post(f"{fakes.BASE}/auth/refresh", status=401, json={"message": "no"})

    AuthApiClient().call("GET", "/users/me")
    AuthApiClient().call("POST", "/auth/refresh")

    after = backend_calls(client)
    name = "auth_backend_requests_total"
    for endpoint in ("me", "refresh"):
        assert total(after, name, endpoint=endpoint) - total(before, name, endpoint=endpoint) == 1
    assert total(after, name, endpoint="health") == total(before, name, endpoint="health")
