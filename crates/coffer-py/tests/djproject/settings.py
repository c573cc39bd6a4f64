"""Settings of the Django test project; the database and coffer.toml come from the
environment the suite (or the benchmark) sets: DJANGO_DB_URL, COFFER_CONFIG."""

import os
from urllib.parse import urlparse

_db = urlparse(os.environ.get("DJANGO_DB_URL", "postgres://postgres@127.0.0.1:5432/test"))

SECRET_KEY = "test-only-not-secret"
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.postgres", "coffer.django", "djproject.patients"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _db.path.lstrip("/"),
        "USER": _db.username or "postgres",
        "PASSWORD": _db.password or "",
        "HOST": _db.hostname or "127.0.0.1",
        "PORT": str(_db.port or 5432),
        # DJANGO_SERVER_SIDE_BINDING=1: psycopg binds parameters on the server (binary bytea)
        "OPTIONS": {"server_side_binding": os.environ.get("DJANGO_SERVER_SIDE_BINDING") == "1"},
    }
}
COFFER = {"CONFIG": os.environ.get("COFFER_CONFIG")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
