from django import template

from accounts.roles import user_has_role

register = template.Library()


@register.filter
def has_role(user, roles: str) -> bool:
    """`{% if user|has_role:"evaluator,admin" %}`: any of the comma-separated roles."""
    return user_has_role(user, *(role.strip() for role in roles.split(",")))
