"""Coffer from Python against `cryptography` on the same machine, in the same run.

1. One 50-byte value: Keyring.encrypt / decrypt (scope, column, row context; key cached in L1)
   against cryptography's AESGCM with a random nonce (os.urandom(12), the row context as AAD)
   and Fernet.
2. 10 000 × 50-byte values: Keyring.encrypt_batch / decrypt_batch (GIL released, all cores)
   against a Python loop over AESGCM.
3. Django ORM: bulk_create of 10 000 patients with encrypted fields (ssn and its blind index,
   email and its prefix tokens, birth date, JSON diagnoses, notes, key version) against the
   same model unencrypted, PostgreSQL at COFFER_TEST_PG.

Usage: python bench.py [--coffer PATH-TO-coffer] [--repeat 5]
Prints a table; times are medians over the repeats (µs per value, or ms per batch/insert).
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

import psycopg
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import coffer

HERE = Path(__file__).resolve().parent
PG = os.environ.get("COFFER_TEST_PG", "postgres://postgres@127.0.0.1:5432/test")
N_BATCH = 10_000


def per_op(fn, number: int, repeat: int) -> float:
    """Median µs per call."""
    return statistics.median(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def median_ms(fn, repeat: int, setup=None) -> float:
    out = []
    for _ in range(repeat):
        if setup:
            setup()
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e3)
    return statistics.median(out)


def fields(ring: coffer.Keyring, scope: str, repeat: int) -> list[tuple[str, float, str]]:
    pt = secrets.token_bytes(50)
    ctx = "patient-42"
    aad = ctx.encode()
    key = AESGCM.generate_key(bit_length=256)
    aes = AESGCM(key)
    fer = Fernet(Fernet.generate_key())
    ct = ring.encrypt(scope, "patients.ssn", pt, context=ctx)
    nonce = os.urandom(12)
    act = aes.encrypt(nonce, pt, aad)
    tok = fer.encrypt(pt)
    n = 20_000
    col = ring.column(scope, "patients.ssn")
    rows = [
        ("coffer Column.encrypt (50 B)", per_op(lambda: col.encrypt(pt, context=ctx), n, repeat), "µs"),
        ("coffer Keyring.encrypt (50 B, names parsed per call)", per_op(lambda: ring.encrypt(scope, "patients.ssn", pt, context=ctx), n, repeat), "µs"),
        ("cryptography AESGCM encrypt, os.urandom(12) nonce", per_op(lambda: aes.encrypt(os.urandom(12), pt, aad), n, repeat), "µs"),
        ("cryptography Fernet encrypt", per_op(lambda: fer.encrypt(pt), n, repeat), "µs"),
        ("coffer Column.decrypt (50 B)", per_op(lambda: col.decrypt(ct, context=ctx), n, repeat), "µs"),
        ("coffer Keyring.decrypt (50 B, names parsed per call)", per_op(lambda: ring.decrypt(scope, "patients.ssn", ct, context=ctx), n, repeat), "µs"),
        ("cryptography AESGCM decrypt", per_op(lambda: aes.decrypt(nonce, act, aad), n, repeat), "µs"),
        ("cryptography Fernet decrypt", per_op(lambda: fer.decrypt(tok), n, repeat), "µs"),
    ]
    sizes = f"sizes: coffer {len(ct)} B, AESGCM {len(act) + 12} B (with nonce), Fernet {len(tok)} B (base64 token)"
    print(sizes)

    pts = [secrets.token_bytes(50) for _ in range(N_BATCH)]
    ctxs = [f"patient-{i}" for i in range(N_BATCH)]
    aads = [c.encode() for c in ctxs]
    cts = ring.encrypt_batch(scope, "patients.ssn", pts, contexts=ctxs)
    nonces = [os.urandom(12) for _ in range(N_BATCH)]
    acts = [aes.encrypt(nn, p, a) for nn, p, a in zip(nonces, pts, aads)]
    rows += [
    ]
    # A batch takes a few ms and this machine's scheduling noise is of the same order: many
    # interleaved repeats, and their median.
    batch = {
        "coffer Column.encrypt_batch, 10 000 × 50 B": lambda: col.encrypt_batch(pts, contexts=ctxs),
        "Python loop over AESGCM encrypt, 10 000 × 50 B": lambda: [
            aes.encrypt(os.urandom(12), p, a) for p, a in zip(pts, aads)
        ],
        "coffer Column.decrypt_batch, 10 000 × 50 B": lambda: col.decrypt_batch(cts, contexts=ctxs),
        "Python loop over AESGCM decrypt, 10 000 × 50 B": lambda: [
            aes.decrypt(nn, c, a) for nn, c, a in zip(nonces, acts, aads)
        ],
    }
    times: dict[str, list[float]] = {k: [] for k in batch}
    for _ in range(repeat * 10):
        for k, fn in batch.items():
            t = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t) * 1e3)
    rows += [(k, statistics.median(v), "ms") for k, v in times.items()]
    return rows


def django_insert(repeat: int) -> list[tuple[str, float, str]]:
    import datetime as dt

    sys.path.insert(0, str(HERE.parent / "tests"))
    os.environ["DJANGO_SETTINGS_MODULE"] = "djproject.settings"
    import django
    from django.core.management import call_command
    from django.db import connection, transaction

    django.setup()
    call_command("migrate", run_syncdb=True, verbosity=0)
    from djproject.patients.models import EncryptedPatient, Patient, PlainIndexedPatient, PlainPatient

    def values(i: int) -> dict:
        return dict(
            name=f"patient {i}",
            ssn=f"{i % 1000:03d}-{i % 100:02d}-{i % 10000:04d}",
            email=f"user{i}.name@example.org",
            birth_date=dt.date(1950, 1, 1) + dt.timedelta(days=i % 20000),
            diagnoses={"codes": ["E11.9", f"I{i % 100}"]},
            notes=f"note {i}",
        )

    def truncate() -> None:
        with connection.cursor() as c:
            c.execute("TRUNCATE dj_patients, dj_plain_patients, dj_encrypted_patients, dj_plain_indexed_patients")

    def insert(model) -> float:
        objs = [model(**values(i)) for i in range(N_BATCH)]
        t = time.perf_counter()
        with transaction.atomic():
            model.objects.bulk_create(objs, batch_size=1000)
        return (time.perf_counter() - t) * 1e3

    models = {"plain": PlainPatient, "encrypted": EncryptedPatient, "plain+indexes": PlainIndexedPatient,
              "encrypted+search": Patient}
    for m in models.values():  # warm-up: scope creation, key load, statement shapes
        insert(m)
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(repeat):  # interleaved, so drift hits every model alike
        for k, m in models.items():
            truncate()
            times[k].append(insert(m))
    med = {k: statistics.median(v) for k, v in times.items()}
    return [
        ("Django bulk_create 10 000 rows, unencrypted model", med["plain"], "ms"),
        ("Django bulk_create 10 000 rows, same model encrypted", med["encrypted"], "ms"),
        ("  overhead", (med["encrypted"] / med["plain"] - 1) * 100, "%"),
        ("Django bulk_create, unencrypted + indexes on ssn, lower(email)", med["plain+indexes"], "ms"),
        ("Django bulk_create, encrypted + blind index + prefix tokens (GIN)", med["encrypted+search"], "ms"),
        ("  overhead", (med["encrypted+search"] / med["plain+indexes"] - 1) * 100, "%"),
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--coffer", default=os.environ.get("COFFER_BIN", "coffer"))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-django", action="store_true")
    a = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="coffer-py-bench-"))
    db = f"coffer_py_bench_{os.getpid()}"
    with psycopg.connect(PG, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{db}"')
    try:
        os.environ["COFFER_BENCH_KEK"] = base64.b64encode(secrets.token_bytes(32)).decode()
        config = work / "coffer.toml"
        subprocess.run([a.coffer, "keys", "init", "--config", str(config), "--store", f"sqlite:{work / 'keys.db'}",
                        "--kek", "env:COFFER_BENCH_KEK"], check=True, capture_output=True)
        os.environ["COFFER_CONFIG"] = str(config)
        os.environ["DJANGO_DB_URL"] = PG.rsplit("/", 1)[0] + "/" + db
        ring = coffer.Keyring(str(config))
        scope = "bench:fields"
        ring.create_scope(scope)
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
        rows = fields(ring, scope, a.repeat)
        if not a.no_django:
            rows += django_insert(a.repeat)
        w = max(len(r[0]) for r in rows)
        for name, v, unit in rows:
            print(f"{name:<{w}}  {v:9.2f} {unit}")
        by = {r[0]: r[1] for r in rows}
        aes_e = by["cryptography AESGCM encrypt, os.urandom(12) nonce"]
        aes_d = by["cryptography AESGCM decrypt"]
        print(f"single-call encrypt: {by['coffer Column.encrypt (50 B)'] / aes_e:.2f}× AESGCM time (target ≤ 1)")
        print(f"single-call decrypt: {by['coffer Column.decrypt (50 B)'] / aes_d:.2f}× AESGCM time")
        for what in ("encrypt", "decrypt"):
            loop = by[f"Python loop over AESGCM {what}, 10 000 × 50 B"]
            ours = by[f"coffer Column.{what}_batch, 10 000 × 50 B"]
            print(f"batch {what}: {loop / ours:.1f}× faster than the AESGCM loop (target ≥ 5)")
    finally:
        from django.db import connections

        try:
            connections.close_all()
        except Exception:  # noqa: BLE001 - Django may not be set up
            pass
        with psycopg.connect(PG, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


if __name__ == "__main__":
    main()
