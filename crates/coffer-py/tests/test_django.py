"""Django: the patients model end to end on PostgreSQL, with a PostgreSQL key store."""

from __future__ import annotations

import datetime as dt
import os
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest

import coffer
from conftest import Store, while_reading
from conftest import raw_sql as _raw
from tomlw import schema_toml


def _make(Patient: Any, i: int) -> Any:
    return Patient(
        name=f"patient {i}",
        ssn=f"{100 + i:03d}-{i % 100:02d}-{i:04d}"[:11],
        email=f"user{i}.x@example.org",
        birth_date=dt.date(1950, 1, 1) + dt.timedelta(days=i),
        diagnoses={"codes": ["E11.9", f"I{i}"]},
        notes=None if i % 2 else f"note {i}",
    )


def test_create_read_and_what_the_database_holds(dj: Any) -> None:
    Patient = dj
    p = Patient.objects.create(
        name="Ann Lee",
        ssn="123-45-6789",
        email="Ann.Lee@example.org",
        birth_date=dt.date(1980, 2, 29),
        diagnoses={"codes": ["E11.9", "I10"]},
        notes=None,
    )
    got = Patient.objects.get(pk=p.pk)
    assert got.ssn == "123-45-6789"
    assert got.email == "Ann.Lee@example.org"
    assert got.birth_date == dt.date(1980, 2, 29)
    assert got.diagnoses == {"codes": ["E11.9", "I10"]}
    assert got.notes is None and got.key_version == 1
    ssn, notes, bidx, prefix = _raw(
        "SELECT ssn, notes, ssn_bidx, email_prefix FROM dj_patients WHERE id = %s", [p.pk]
    )[0]
    assert b"123-45-6789" not in bytes(ssn) and len(bytes(ssn)) == 11 + 25
    assert notes is not None  # authenticated NULL: sealed, not SQL NULL
    assert len(bytes(bidx)) == 4 and len(prefix) == 6  # prefix lengths 3..=8
    assert "123-45-6789" not in repr(Patient.objects.filter(pk=p.pk).values_list("ssn"))


def test_filter_by_ssn_and_email_prefix(dj: Any) -> None:
    Patient = dj
    a = Patient.objects.create(name="a", ssn="555-11-2222", email="zed.alpha@example.org")
    b = Patient.objects.create(name="b", ssn="555-11-3333", email="zed.beta@example.org")
    Patient.objects.create(name="c", ssn="555-11-4444", email="other@example.org")
    assert [x.pk for x in Patient.objects.filter(ssn="555 11 2222")] == [a.pk]  # digits normalizer
    assert {x.pk for x in Patient.objects.filter(ssn__in=["555-11-2222", "555-11-3333"])} == {a.pk, b.pk}
    assert {x.pk for x in Patient.objects.filter(email__startswith="ZED.")} == {a.pk, b.pk}
    assert {x.pk for x in Patient.objects.filter(email__istartswith="zed.al")} == {a.pk}
    # longer than the longest indexed prefix: candidates by 8 characters, confirmed by search()
    from coffer.django import search

    assert [x.pk for x in search(Patient.objects.all(), email__startswith="zed.alphaX")] == []
    assert [x.pk for x in search(Patient.objects.all(), email__startswith="zed.alpha@")] == [a.pk]
    assert not Patient.objects.filter(ssn="000-00-0000").exists()
    with pytest.raises(coffer.ConfigError):
        list(Patient.objects.filter(email__startswith="ab"))  # shorter than the shortest prefix
    from django.core.exceptions import FieldError

    with pytest.raises(FieldError):
        list(Patient.objects.filter(ssn__contains="45"))
    with pytest.raises(coffer.CofferError):
        Patient.objects.filter(pk=a.pk).update(ssn="999-99-9999")


def test_update_reseals_value_and_indexes(dj: Any) -> None:
    Patient = dj
    p = Patient.objects.create(name="u", ssn="777-00-0001", email="upd@example.org")
    before = _raw("SELECT ssn, ssn_bidx FROM dj_patients WHERE id = %s", [p.pk])[0]
    p.ssn = "777-00-0002"
    p.save()
    after = _raw("SELECT ssn, ssn_bidx FROM dj_patients WHERE id = %s", [p.pk])[0]
    assert bytes(before[0]) != bytes(after[0]) and bytes(before[1]) != bytes(after[1])
    assert [x.pk for x in Patient.objects.filter(ssn="777-00-0002")] == [p.pk]
    assert Patient.objects.get(pk=p.pk).ssn == "777-00-0002"


def test_rotation_and_reencrypt_command_while_reads_continue(dj: Any) -> None:
    from django.core.management import call_command
    from django.db import connection

    Patient = dj
    made = Patient.objects.bulk_create([_make(Patient, i) for i in range(400)])
    expected = {p.pk: (p.ssn, p.email, p.birth_date, p.diagnoses, p.notes) for p in made}
    keyring = coffer.django.keyring()
    assert keyring.rotate("table:dj_patients") >= 2
    active = keyring.active_version("table:dj_patients")

    ids = list(expected)

    def read_once() -> None:
        pk = random.choice(ids)
        p = Patient.objects.get(pk=pk)
        assert (p.ssn, p.email, p.birth_date, p.diagnoses, p.notes) == expected[pk]
        assert Patient.objects.filter(ssn=p.ssn).filter(pk=pk).exists()

    def reencrypt() -> None:
        call_command("coffer_reencrypt", "patients.Patient", batch_size=50, stdout=open(os.devnull, "w"))

    # Each reader thread has its own Django connection: closed when the thread stops.
    _, reads = while_reading(reencrypt, read_once, on_exit=lambda: connection.close())
    assert reads > 0
    rows = _raw("SELECT id, key_version, get_byte(ssn, 0) FROM dj_patients")
    assert rows and all(v == active for _, v, _ in rows)
    for p in Patient.objects.filter(pk__in=ids):
        assert (p.ssn, p.email, p.birth_date, p.diagnoses, p.notes) == expected[p.pk]
    for pk in random.sample(ids, 20):
        assert Patient.objects.filter(ssn=expected[pk][0]).filter(pk=pk).exists()
        assert Patient.objects.filter(email__startswith=expected[pk][1][:6]).filter(pk=pk).exists()
    connection.close()


def test_tampered_and_copied_ciphertexts_raise(dj: Any) -> None:
    Patient = dj
    a = Patient.objects.create(name="t1", ssn="321-00-0001", email="t1@example.org")
    b = Patient.objects.create(name="t2", ssn="321-00-0002", email="t2@example.org")
    _raw("UPDATE dj_patients SET ssn = set_byte(ssn, 20, get_byte(ssn, 20) # 1) WHERE id = %s", [a.pk])
    got = Patient.objects.get(pk=a.pk)
    assert got.name == "t1"  # the row loads; the value fails when read
    with pytest.raises(coffer.DecryptionError, match="decryption failed"):
        got.ssn
    _raw("UPDATE dj_patients SET email = (SELECT email FROM dj_patients WHERE id = %s) WHERE id = %s", [b.pk, a.pk])
    with pytest.raises(coffer.DecryptionError):
        Patient.objects.get(pk=a.pk).email
    _raw("UPDATE dj_patients SET notes = NULL WHERE id = %s", [b.pk])  # authenticated NULL removed
    with pytest.raises(coffer.CofferError):
        Patient.objects.get(pk=b.pk).notes
    _raw("UPDATE dj_patients SET ssn = 'plaintext' WHERE id = %s", [b.pk])
    with pytest.raises(coffer.DecryptionError):
        Patient.objects.get(pk=b.pk).ssn


def test_destroyed_scope_raises_key_destroyed(dj: Any, pg_store: Store, cli: Path) -> None:
    from djproject.patients.models import Note

    n = Note.objects.create(body="erase me")
    assert Note.objects.get(pk=n.pk).body == "erase me"
    pg_store.run(cli, "keys", "destroy", "table:dj_notes", "--yes", "--config", str(pg_store.config))
    coffer.django.keyring().clear_cache()
    got = Note.objects.get(pk=n.pk)
    with pytest.raises(coffer.KeyDestroyed, match="crypto-shredded"):
        got.body
    with pytest.raises(coffer.KeyDestroyed):
        Note.objects.create(body="no key to seal with")


def test_cli_and_rust_read_what_django_wrote_and_back(dj: Any, pg_store: Store, pg_database: str, cli: Path,
                                                     rust_interop: Path, tmp_path: Path) -> None:
    from coffer.django import table_for

    Patient = dj
    p = Patient.objects.create(name="x", ssn="246-80-1357", email="cross@example.org")
    schema = tmp_path / "coffer-columns.toml"
    schema.write_text(schema_toml(table_for(Patient).definition.spec()))
    hexct = bytes(_raw("SELECT ssn FROM dj_patients WHERE id = %s", [p.pk])[0][0]).hex()
    out = pg_store.run(cli, "--version", check=False)
    assert out.returncode == 0
    r = subprocess.run(
        [str(rust_interop), "open", str(pg_store.config), str(schema), "dj_patients", str(p.pk), "ssn", hexct],
        env=pg_store.env, capture_output=True, check=True, text=True,
    )
    assert r.stdout.strip() == "246-80-1357"
    r = subprocess.run(
        [str(rust_interop), "seal", str(pg_store.config), str(schema), "dj_patients", str(p.pk), "ssn", "135-79-2468"],
        env=pg_store.env, capture_output=True, check=True, text=True,
    )
    _raw("UPDATE dj_patients SET ssn = %s, key_version = NULL WHERE id = %s", [bytes.fromhex(r.stdout.strip()), p.pk])
    assert Patient.objects.get(pk=p.pk).ssn == "135-79-2468"
    # The CLI's re-encryption job opens every row Django wrote, and Django reads its output.
    env = dict(pg_store.env, DATABASE_URL=pg_database)
    done = subprocess.run(
        [str(cli), "reencrypt", "--config", str(pg_store.config), "--schema", str(schema), "--table", "dj_patients"],
        env=env, capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr
    got = Patient.objects.get(pk=p.pk)
    assert got.ssn == "135-79-2468" and got.key_version is not None
    assert [x.pk for x in Patient.objects.filter(ssn="135-79-2468")] == [p.pk]


def test_model_forms_see_plaintext(dj: Any) -> None:
    from django import forms

    Patient = dj

    class PatientForm(forms.ModelForm):
        class Meta:
            model = Patient
            fields = ["name", "ssn", "email", "birth_date", "diagnoses"]

    f = PatientForm(data={"name": "F", "ssn": "111-22-3333", "email": "not-an-email", "birth_date": "1990-01-02",
                          "diagnoses": '{"codes": []}'})
    assert not f.is_valid() and "email" in f.errors
    f = PatientForm(data={"name": "F", "ssn": "111-22-3333", "email": "f@example.org", "birth_date": "1990-01-02",
                          "diagnoses": '{"codes": []}'})
    assert f.is_valid(), f.errors
    p = f.save()
    got = Patient.objects.get(pk=p.pk)
    assert (got.ssn, got.email, str(got.birth_date), got.diagnoses) == ("111-22-3333", "f@example.org", "1990-01-02", {"codes": []})
    assert PatientForm(instance=got).initial["ssn"] == "111-22-3333"


def test_fast_bytea_arrays_write_what_psycopg_writes(pg_database: str) -> None:
    import secrets

    import psycopg
    from psycopg.adapt import PyFormat, Transformer
    from psycopg.types.array import ListDumper

    from coffer._table import Sealed
    from coffer.django._arrays import ByteaListDumper, register

    with psycopg.connect(pg_database) as conn:
        plain_tx = Transformer(conn)
        samples = [
            [secrets.token_bytes(n) for n in (0, 1, 2, 17, 80, 300)],
            [b'"', b"\\", b",{}", None, b"NULL", b" "],
            [None, None],
            [Sealed(secrets.token_bytes(40)), b"x"],
        ]
        expected = [plain_tx.get_dumper(s, PyFormat.TEXT).dump(s) for s in samples]
        register(conn)
        tx = Transformer(conn)
        for s, want in zip(samples, expected):
            d = tx.get_dumper(s, PyFormat.TEXT)
            # (a list of only NULLs has no element type: psycopg's dumper writes it)
            assert (type(d) is ByteaListDumper) == any(x is not None for x in s)
            assert bytes(d.dump(s)) == bytes(want)
        # Lists it does not take go through psycopg's own dumper.
        for other in ([b"a", bytearray(b"b")], ["text", "list"], [[b"a"], [b"b"]]):
            d = tx.get_dumper(other, PyFormat.TEXT)
            want = plain_tx.get_dumper(other, PyFormat.TEXT).dump(other)
            assert bytes(d.dump(other)) == bytes(want)
        # And the database reads the same values back.
        s = samples[1]
        got = conn.execute("SELECT %s::bytea[]", [s]).fetchone()[0]
        assert got == s
        assert issubclass(ByteaListDumper, ListDumper)
