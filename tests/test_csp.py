"""accounts/csp.py: django-csp's policy on every response that brings none of its own."""

import pytest
from django.http import HttpResponse
from django.test import RequestFactory

from accounts.csp import CSPMiddleware

SITE = {"DIRECTIVES": {"default-src": ["'self'"]}}


def answer(request, *, own: str | None = None):
    response = HttpResponse("{}", content_type="application/json")
    if own:
        response["Content-Security-Policy"] = own
    return CSPMiddleware(lambda r: response).process_response(request, response)


@pytest.fixture
def request_(settings):
    settings.CONTENT_SECURITY_POLICY = SITE
    return RequestFactory().get("/api/users/me")


def test_a_response_without_a_policy_gets_the_sites(request_):
    assert answer(request_)["Content-Security-Policy"] == "default-src 'self'"


def test_a_response_with_its_own_policy_keeps_it_and_costs_no_build(request_, monkeypatch):
    import csp.middleware

    def built(**kwargs):
        raise AssertionError("the site's policy was built for a response that has one")

    monkeypatch.setattr(csp.middleware, "build_policy", built)
    assert answer(request_, own="sandbox")["Content-Security-Policy"] == "sandbox"


def test_a_report_only_policy_still_reaches_a_response_with_its_own(request_, settings):
    settings.CONTENT_SECURITY_POLICY_REPORT_ONLY = {"DIRECTIVES": {"img-src": ["'self'"]}}
    response = answer(request_, own="sandbox")
    assert response["Content-Security-Policy"] == "sandbox"
    assert "img-src 'self'" in response["Content-Security-Policy-Report-Only"]
