"""``manage.py create_api_key --name N --scopes a,b``: prints the new key once, as its last line."""

from django.core.management.base import BaseCommand, CommandError

from studio.core.auth import create_api_key
from studio.core.models import API_SCOPES


class Command(BaseCommand):
    help = "Create an API key. The key is printed once, as the last line: 'API key: <key>'."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True)
        parser.add_argument("--scopes", default=",".join(API_SCOPES), help=f"comma-separated: {', '.join(API_SCOPES)}")

    def handle(self, *args, name: str, scopes: str, **options):
        try:
            key, plain = create_api_key(name=name, scopes=[s.strip() for s in scopes.split(",") if s.strip()])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Created key '{key.name}' with scopes {', '.join(key.scopes)}. It is not stored; keep it.")
        self.stdout.write(f"API key: {plain}")
