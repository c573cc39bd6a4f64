"""Fixtures for the Python suite: the `coffer` CLI, a key store made by `coffer keys init`
(SQLite, or PostgreSQL), and PostgreSQL databases of our own (uniquely named, dropped at the
end, so runs by others on the same server never collide).

Environment: COFFER_BIN (the CLI; default: target/{debug,release}/coffer under
CARGO_TARGET_DIR), COFFER_TEST_PG (default postgres://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import psycopg
import pytest

import coffer

PG = os.environ.get("COFFER_TEST_PG", "postgres://postgres@127.0.0.1:5432/test")
ROOT = Path(__file__).resolve().parents[3]


def _find_bin(name: str, sub: str = "") -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    for profile in ("debug", "release"):
        p = target / profile / sub / name
        if p.exists():
            return p
    pytest.fail(f"{name} not built under {target} (make test-python builds it)")


@pytest.fixture(scope="session")
def cli() -> Path:
    """The `coffer` binary."""
    env = os.environ.get("COFFER_BIN")
    return Path(env) if env else _find_bin("coffer")


@pytest.fixture(scope="session")
def rust_interop() -> Path:
    """The coffer-postgres example that seals and opens values from Rust."""
    env = os.environ.get("COFFER_RUST_INTEROP")
    return Path(env) if env else _find_bin("rust_interop", "examples")


def _url_with_db(url: str, db: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + db


@contextlib.contextmanager
def throwaway_database(prefix: str) -> Iterator[str]:
    """A fresh PostgreSQL database (`prefix`, the pid and random hex), dropped on exit: its URL.

    The only copy of this helper on the Python side (coffer-testkit's `pg` is the Rust one).
    """
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(PG, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _url_with_db(PG, name)
    finally:
        with psycopg.connect(PG, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A PostgreSQL database of this test session: its URL."""
    with throwaway_database("coffer_py") as url:
        yield url


def make_store(cli: Path, directory: Path, store_url: str) -> tuple[Path, dict[str, str]]:
    """`coffer keys init` in `directory`: returns coffer.toml and the environment (the KEK)."""
    directory.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["COFFER_TEST_KEK"] = base64.b64encode(secrets.token_bytes(32)).decode()
    env.pop("COFFER_STORE_URL", None)
    env.pop("COFFER_REDIS_URL", None)
    config = directory / "coffer.toml"
    subprocess.run(
        [str(cli), "keys", "init", "--config", str(config), "--store", store_url, "--kek", "env:COFFER_TEST_KEK"],
        check=True,
        env=env,
        capture_output=True,
        cwd=directory,
    )
    return config, env


class Store:
    """A key store and its coffer.toml; `env` holds the KEK variable the CLI needs."""

    def __init__(self, config: Path, env: dict[str, str]) -> None:
        self.config = config
        self.env = env

    def keyring(self) -> coffer.Keyring:
        os.environ["COFFER_TEST_KEK"] = self.env["COFFER_TEST_KEK"]
        return coffer.Keyring(str(self.config))

    def run(self, cli: Path, *args: str, check: bool = True, input: bytes | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([str(cli), *args], env=self.env, capture_output=True, check=check, input=input)


@pytest.fixture(scope="session")
def sqlite_store(cli: Path, tmp_path_factory: pytest.TempPathFactory) -> Store:
    d = tmp_path_factory.mktemp("sqlite-store")
    config, env = make_store(cli, d, f"sqlite:{d / 'keys.db'}")
    return Store(config, env)


@pytest.fixture(scope="session")
def pg_store(cli: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """A key store in a PostgreSQL database of its own."""
    with throwaway_database("coffer_py_keys") as url:
        d = tmp_path_factory.mktemp("pg-store")
        config, env = make_store(cli, d, url)
        yield Store(config, env)


@pytest.fixture(scope="session")
def keyring(sqlite_store: Store) -> coffer.Keyring:
    return sqlite_store.keyring()


def unique_scope(prefix: str = "test") -> str:
    return f"{prefix}:{secrets.token_hex(6)}"


@pytest.fixture()
def scope(keyring: coffer.Keyring) -> str:
    s = unique_scope()
    keyring.create_scope(s)
    return s


def which(name: str) -> str | None:
    return shutil.which(name)


T = TypeVar("T")


def while_reading(
    job: Callable[[], T],
    read_once: Callable[[], None],
    *,
    threads: int = 2,
    on_exit: Callable[[], None] | None = None,
) -> tuple[T, int]:
    """Runs `job` while `threads` threads call `read_once` over and over (each thread calls
    `on_exit`, if given, when it stops): the job's result and how many reads were made. The first
    read that failed fails the caller."""
    stop = threading.Event()
    errors: list[BaseException] = []
    reads = [0]
    lock = threading.Lock()

    def reader() -> None:
        try:
            while not stop.is_set():
                read_once()
                with lock:
                    reads[0] += 1
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            if on_exit is not None:
                on_exit()

    workers = [threading.Thread(target=reader) for _ in range(threads)]
    for t in workers:
        t.start()
    try:
        result = job()
    finally:
        stop.set()
        for t in workers:
            t.join()
    assert not errors, errors[0]
    return result, reads[0]


@pytest.fixture(scope="session")
def dj(pg_store: Store, pg_database: str) -> Iterator[type]:
    """Django set up on the test project (tests/djproject) with its tables made: the Patient
    model. One per session (Django's settings are read once per process)."""
    os.environ["COFFER_TEST_KEK"] = pg_store.env["COFFER_TEST_KEK"]
    os.environ["COFFER_CONFIG"] = str(pg_store.config)
    os.environ["DJANGO_DB_URL"] = pg_database
    os.environ["DJANGO_SETTINGS_MODULE"] = "djproject.settings"
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", run_syncdb=True, verbosity=0)
    from djproject.patients.models import Patient

    yield Patient


def raw_sql(sql: str, params: list | None = None) -> list[tuple]:
    """Runs SQL on Django's default connection: the rows, if any."""
    from django.db import connection

    with connection.cursor() as c:
        c.execute(sql, params or [])
        return c.fetchall() if c.description else []
