"""`{{ when|moment }}`: every date and time on the pages, written one way."""

import math

from django import template
from django.utils import dateformat, timezone
from django.utils.formats import date_format
from django.utils.html import format_html

from accounts.views import wait_phrase

register = template.Library()

# "6 Dec 2025, 14:05 UTC": day first, the month in letters (never 06/12 against
# 12/06), minutes and the time zone; the same on every page.
MOMENT_FORMAT = "j M Y, H:i T"
MACHINE_FORMAT = r"Y-m-d\TH:i:sO"


@register.filter
def moment_text(value) -> str:
    """Return an aware datetime as "6 Dec 2025, 14:05 UTC", in the current time zone."""
    if not value:
        return ""
    return date_format(timezone.localtime(value), MOMENT_FORMAT)


@register.filter
def moment(value):
    """Return a `<time>` element: the instant for machines, `moment_text` for people."""
    if not value:
        return ""
    machine = dateformat.format(timezone.localtime(value), MACHINE_FORMAT)
    return format_html('<time datetime="{}">{}</time>', machine, moment_text(value))


@register.filter
def wait(seconds) -> str:
    """Return a wait in words: "12 seconds", "about 5 minutes (until 14:05 UTC)"."""
    try:
        seconds = max(1, math.ceil(float(seconds)))
    except (TypeError, ValueError):
        return ""
    return wait_phrase(seconds)
