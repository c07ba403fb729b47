from django import template

from accounts.roles import user_has_role
from accounts.users import display_name, roles_of

register = template.Library()


@register.filter
def has_role(user, roles) -> bool:
    """`{% if user|has_role:"evaluator,admin" %}`: any of the roles, comma-separated or a list."""
    if isinstance(roles, str):
        roles = roles.split(",")
    return user_has_role(user, *(role.strip() for role in roles))


@register.filter
def roles(user) -> tuple[str, ...]:
    """`{{ user|roles|join:", " }}`: the roles the backend last reported, any user model."""
    return roles_of(user)


@register.filter(name="display_name")
def display_name_filter(user) -> str:
    """`{{ user|display_name }}`: the full name, else the email, else the username."""
    return display_name(user)
