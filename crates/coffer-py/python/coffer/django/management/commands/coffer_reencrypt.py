"""``manage.py coffer_reencrypt app_label.Model``: moves a model's rows to the active key
version (the job of ``coffer reencrypt``), while the application keeps reading and writing."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError, CommandParser

from coffer._native import CofferError
from coffer.django.fields import reencrypt, table_for


class Command(BaseCommand):
    help = (
        "Re-encrypts the rows of models with encrypted fields under the active key version "
        "(rows whose key_version is NULL or older), in batches locked with FOR UPDATE SKIP "
        "LOCKED. Idempotent and resumable; safe while the application runs."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("models", nargs="+", metavar="app_label.Model")
        parser.add_argument("--database", default="default", help="the database alias")
        parser.add_argument("--batch-size", type=int, default=1000, help="rows per batch (one transaction each)")
        parser.add_argument("--workers", type=int, default=1, help="concurrent workers")
        parser.add_argument("--max-rows", type=int, default=None, help="stop after this many rows (a canary run)")

    def handle(self, *args: Any, **opts: Any) -> None:
        for label in opts["models"]:
            try:
                model = apps.get_model(label)
            except (LookupError, ValueError) as e:
                raise CommandError(f"{label}: {e}") from None
            try:
                table_for(model)
                r = reencrypt(
                    model,
                    using=opts["database"],
                    batch_size=opts["batch_size"],
                    workers=opts["workers"],
                    max_rows=opts["max_rows"],
                )
            except CofferError as e:
                raise CommandError(f"{label}: {e}") from e
            self.stdout.write(
                f"{label}: {r['rows']} rows re-encrypted in {r['batches']} batches "
                f"({r['seconds']:.1f} s) to key version {r['active_version']}; {r['pending']} pending"
            )
