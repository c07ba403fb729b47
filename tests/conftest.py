import pytest
import responses
from django.core.management import call_command
from django.test import Client

from tests import fakes


@pytest.fixture
def api_client(settings, db):
    """A Django test client that speaks to the reference API as its own server does.

    Same URLconf, no middleware (see authapi/server.py), demo users seeded.
    """
    settings.ROOT_URLCONF = "authapi.urls"
    settings.MIDDLEWARE = []
    call_command("seed_demo_users", quiet=True)
    return Client()


@pytest.fixture
def backend(settings):
    """The auth backend as `responses` stubs at fakes.BASE; unmatched calls fail."""
    settings.API_BASEURL = fakes.BASE
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


@pytest.fixture
def csrf_client(db):
    """A test client that enforces CSRF like a browser session would be checked."""
    return Client(enforce_csrf_checks=True)


@pytest.fixture
def locmem_cache(settings, request):
    """A private in-process cache: refresh pool threads see it without the test DB."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": request.node.nodeid,
        }
    }
    from django.core.cache import cache

    cache.clear()
    return cache


@pytest.fixture
def signed_in(client, db, locmem_cache, backend):
    """Sign a test client in as a PROFILES user holding the given token cookies."""

    def sign_in(who="admin", access=None, refresh="refresh-1"):
        return fakes.sign_in_client(client, who, access=access, refresh=refresh)

    return sign_in
