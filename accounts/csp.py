"""django-csp's middleware, minus the work for a response that brings its own policy.

`MIDDLEWARE`: "accounts.csp.CSPMiddleware" in place of
"csp.middleware.CSPMiddleware". django-csp builds the site's policy for every
response and then keeps the one a view has set; the `/api/` proxy sets its own
on every answer (accounts/proxy.py, SANDBOX_POLICY), so that policy was built
for nothing on every proxied call (bench/README.md, issue 23). A response
with a policy of its own goes out as it is; every other response, and every
response while a report-only policy is configured, gets django-csp's.
"""

from csp.constants import HEADER
from csp.middleware import CSPMiddleware as DjangoCSPMiddleware
from django.conf import settings


class CSPMiddleware(DjangoCSPMiddleware):
    def process_response(self, request, response):
        if HEADER in response and not getattr(
            settings, "CONTENT_SECURITY_POLICY_REPORT_ONLY", None
        ):
            return response
        return super().process_response(request, response)
