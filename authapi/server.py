"""The WSGI application of the reference API process.

It serves `authapi.urls` alone and runs none of the web app's middleware: the
API is stateless JSON authenticated by its own tokens, so sessions and CSRF do
not apply, and the app's token-refresh middleware must never run inside the
backend it refreshes against.
"""

from django.core.handlers.exception import convert_exception_to_response
from django.core.handlers.wsgi import WSGIHandler
from django.core.servers.basehttp import WSGIServer

URLCONF = "authapi.urls"


class AuthApiHandler(WSGIHandler):
    """A WSGIHandler with the API's URLconf and an empty middleware chain."""

    def load_middleware(self, is_async=False):
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        self._middleware_chain = convert_exception_to_response(self._get_response)

    def get_response(self, request):
        request.urlconf = URLCONF
        return super().get_response(request)


class AuthApiServer(WSGIServer):
    """Django's threaded WSGI server with a listen backlog for bursts of clients."""

    request_queue_size = 128
