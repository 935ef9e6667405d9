"""Make sure someone can log in: creates an `admin` superuser with a random password, printed once.

There is no default password: each new installation gets its own, and an existing user is never
touched (reset it with `manage.py changepassword NAME`).
"""

import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand

from config.actors import OPERATORS_GROUP


class Command(BaseCommand):
    help = "Create the operators group and, if no superuser exists, an `admin` superuser with a random password."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")

    def handle(self, *args, username, **options):
        Group.objects.get_or_create(name=OPERATORS_GROUP)
        User = get_user_model()
        existing = User.objects.filter(is_superuser=True).order_by("pk").first()
        if existing is not None:
            self.stdout.write(
                f"Log in as {existing.get_username()!r} (forgot the password? "
                f"`.venv/bin/python manage.py changepassword {existing.get_username()}`)."
            )
            return
        password = secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email="", password=password)
        self.stdout.write(self.style.WARNING(
            f"Created superuser {username!r} with password: {password}\n"
            "  (shown once — change it with `.venv/bin/python manage.py changepassword " + username + "`)"
        ))
