"""What every page's navigation needs to show only what the user may open."""

from django.conf import settings


def demo_roles(request) -> dict:
    """The roles each role-gated demo page asks for (DEMO_ADMIN_ROLES, DEMO_EVALUATION_ROLES)."""
    return {
        "demo_roles": {
            "admin": settings.DEMO_ADMIN_ROLES,
            "evaluations": settings.DEMO_EVALUATION_ROLES,
        }
    }
