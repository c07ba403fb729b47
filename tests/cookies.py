"""Parse raw Set-Cookie header values in tests, one header at a time."""

from dataclasses import dataclass, field


@dataclass
class RawCookie:
    name: str
    value: str
    attributes: dict[str, str | bool] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)

    def attr(self, name: str):
        """Return an attribute by name, case-insensitively (None if absent)."""
        for key, value in self.attributes.items():
            if key.lower() == name.lower():
                return value
        return None


def parse_set_cookie(header: str) -> RawCookie:
    """Split one Set-Cookie value on '; ' (Expires holds ', ' but never ';')."""
    first, *rest = [part.strip() for part in header.split(";")]
    name, _, value = first.partition("=")
    cookie = RawCookie(name=name, value=value)
    for part in rest:
        key, sep, attr_value = part.partition("=")
        cookie.attributes[key] = attr_value if sep else True
        cookie.order.append(key)
    return cookie
