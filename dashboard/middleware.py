"""Signed-in pages are never stored: `Cache-Control: private, no-store` on each of them."""

import logging

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponseBase
from django.utils.cache import add_never_cache_headers

logger = logging.getLogger(__name__)


class SignedInNoStoreMiddleware:
    """Mark every response to a signed-in user `private, no-store` (Django's `never_cache`).

    A page that shows who is signed in, their roles or their sessions must not
    be kept by a shared cache, nor by the browser for the next person at the
    same computer (the back button after sign-out). A decorator on each view
    would miss the next view, the error pages and the home page; this looks
    at every response. Needs AuthenticationMiddleware before it in MIDDLEWARE.
    A response that already sets `no-store` is left as it is.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        if self.signed_in(request) and "no-store" not in response.get("Cache-Control", ""):
            add_never_cache_headers(response)
        return response

    @staticmethod
    def signed_in(request: HttpRequest) -> bool:
        """Return whether the request was a signed-in user's; False if that cannot be read."""
        session = getattr(request, "session", None)
        if session is None or not session.accessed:
            return False  # no page of a signed-in user leaves its session unread
        try:
            return request.user.is_authenticated
        except DatabaseError:
            # The outage page (accounts/outage.py) says no-store already.
            return False
