"""The Django app of coffer.django (it brings the ``coffer_reencrypt`` command)."""

from typing import Any

from django.apps import AppConfig
from django.db.backends.signals import connection_created


def _on_connection(sender: Any, connection: Any, **kwargs: Any) -> None:
    from django.conf import settings

    if connection.vendor != "postgresql":
        return
    if not (getattr(settings, "COFFER", None) or {}).get("FAST_BYTEA_ARRAYS", True):
        return
    raw = connection.connection
    if not hasattr(raw, "adapters"):  # psycopg2: not psycopg 3
        return
    from coffer.django._arrays import register

    register(raw)


class CofferConfig(AppConfig):
    name = "coffer.django"
    label = "coffer"
    verbose_name = "Coffer"

    def ready(self) -> None:
        # Faster bytea[] parameters for bulk_create (see coffer.django._arrays).
        connection_created.connect(_on_connection, dispatch_uid="coffer-fast-bytea-arrays")
