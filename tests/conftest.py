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
