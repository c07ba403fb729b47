"""The demo accounts: one place for the seed command, `make run` and the README."""

from dataclasses import dataclass


@dataclass(frozen=True)
class DemoUser:
    email: str
    password: str
    first_name: str
    last_name: str
    roles: tuple[str, ...]


DEMO_USERS = (
    DemoUser("admin@example.com", "admin-demo-pass", "Ada", "Admin", ("admin",)),
    DemoUser("evaluator@example.com", "evaluator-demo-pass", "Eve", "Evaluator", ("evaluator",)),
    DemoUser("viewer@example.com", "viewer-demo-pass", "Victor", "Viewer", ("viewer",)),
)
