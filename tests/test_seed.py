from django.core.management import call_command

from authapi.demo import DEMO_USERS
from authapi.models import ApiUser


def test_seed_is_idempotent_and_restores_documented_accounts(db):
    call_command("seed_demo_users", quiet=True)
    admin = ApiUser.objects.get(email="admin@example.com")
    admin.roles = ["viewer"]
    admin.set_password("changed")
    admin.save()

    call_command("seed_demo_users", quiet=True)

    assert ApiUser.objects.count() == len(DEMO_USERS)
    for demo in DEMO_USERS:
        user = ApiUser.objects.get(email=demo.email)
        assert user.roles == list(demo.roles)
        assert user.check_password(demo.password)
    assert ApiUser.objects.get(pk=admin.pk).roles == ["admin"]


def test_seed_prints_the_accounts(db, capsys):
    call_command("seed_demo_users")
    out = capsys.readouterr().out
    for demo in DEMO_USERS:
        assert demo.email in out
        assert demo.password in out
