"""The WSGI application of the reference API process.

It serves `authapi.urls` alone and runs none of the web app's middleware: the
API is stateless JSON authenticated by its own tokens, so sessions and CSRF do
not apply, and the app's token-refresh middleware must never run inside the
backend it refreshes against.
"""

import socket

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
    """Django's threaded WSGI server with a listen backlog for bursts of clients.

    wsgiref writes the status line and headers, then the body, in separate
    sends; with Nagle's algorithm on, a keep-alive client's delayed ACK stalls
    the second one ~40 ms. TCP_NODELAY sends each write at once.
    """

    request_queue_size = 128

    def get_request(self):
        connection, address = super().get_request()
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection, address
