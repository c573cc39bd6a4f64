"""SQLAlchemy 2: scope templates (one scope per tenant in one table) and per-row keys, with a
SQLite key store and PostgreSQL (docs/PYTHON.md §4, docs/COLUMNS.md §7–8)."""

from __future__ import annotations

import secrets
import uuid
from typing import Any, Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import coffer
import coffer.sqlalchemy as csa
from conftest import Store

TAG = secrets.token_hex(3)
PATIENTS = f"sa_tenant_patients_{TAG}"
VISITS = f"sa_tenant_visits_{TAG}"


class Base(DeclarativeBase):
    pass


class Patient(Base):
    __tablename__ = PATIENTS
    __table_args__ = {"info": {"coffer_scope": "tenant:{tenant_id}/" + PATIENTS}}

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[str] = mapped_column(sa.String(64))
    ssn: Mapped[str] = mapped_column(csa.EncryptedText())
    ssn_bidx: Mapped[bytes | None] = mapped_column(csa.BlindIndex("ssn", bits=32, normalize=["digits"]))
    email: Mapped[str | None] = mapped_column(csa.EncryptedText(), nullable=True)
    email_prefix: Mapped[list[bytes] | None] = mapped_column(
        csa.PrefixIndex("email", bits=32, normalize=["trim", "casefold"], prefix=(3, 8))
    )
    mrn: Mapped[str | None] = mapped_column(csa.EncryptedText(mode="deterministic"), nullable=True)
    key_version: Mapped[int | None] = mapped_column(csa.KeyVersion())


class Visit(Base):
    __tablename__ = VISITS
    __table_args__ = {"info": {"coffer_scope": "tenant:{tenant_id}/" + VISITS, "coffer_keys": "row"}}

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[str] = mapped_column(sa.String(64))
    diagnosis: Mapped[str] = mapped_column(csa.EncryptedText())
    row_key: Mapped[bytes | None] = mapped_column(csa.RowKey(), nullable=True)
    key_version: Mapped[int | None] = mapped_column(csa.KeyVersion())


@pytest.fixture(scope="module")
def engine(sqlite_store: Store, pg_database: str) -> Iterator[sa.Engine]:
    csa.configure(sqlite_store.keyring())
    url = pg_database.replace("postgres://", "postgresql+psycopg://", 1)
    e = sa.create_engine(url)
    Base.metadata.create_all(e)
    yield e
    e.dispose()
    csa.configure(None)


def _tenants(n: int) -> list[str]:
    tag = secrets.token_hex(3)
    return [f"t{i}-{tag}" for i in range(n)]


def _ids(s: Session, stmt: Any) -> set[uuid.UUID]:
    return {x.id for x in s.scalars(stmt)}


def test_two_tenants_same_ssn_differ_and_stay_apart(engine: sa.Engine) -> None:
    a, b = _tenants(2)
    with Session(engine) as s:
        pa = Patient(tenant_id=a, ssn="123-45-6789", email="ann@example.org")
        pb = Patient(tenant_id=b, ssn="123-45-6789", email="ann@example.org")
        s.add_all([pa, pb])
        s.commit()
        ida, idb = pa.id, pb.id
        raw = dict(
            (r[0], (bytes(r[1]), bytes(r[2])))
            for r in s.execute(sa.text(f"SELECT id, ssn, ssn_bidx FROM {PATIENTS} WHERE id IN (:a, :b)"), {"a": ida, "b": idb})
        )
        assert raw[ida][0] != raw[idb][0] and raw[ida][1] != raw[idb][1]
    with Session(engine) as s:
        assert s.get(Patient, ida).ssn == "123-45-6789" and s.get(Patient, idb).ssn == "123-45-6789"
        q = sa.select(Patient).where(Patient.tenant_id == b, Patient.ssn == "123 45 6789")
        assert _ids(s, q) == {idb}
        assert _ids(s, sa.select(Patient).where(Patient.tenant_id == b).where(Patient.email.startswith("ANN@"))) == {idb}
        assert _ids(s, sa.select(Patient).where(Patient.ssn.in_(["123-45-6789"]), Patient.tenant_id == a)) == {ida}
        # B's terms, run on the whole table, find B's row only.
        _, t = csa.table_for(Patient)
        terms = t.search_eq("ssn_bidx", [b"123-45-6789"], scope={"tenant_id": b}).terms
        got = s.execute(sa.select(Patient.id).where(Patient.ssn_bidx.in_(terms))).scalars().all()
        assert got == [idb]


def test_deterministic_column_per_tenant(engine: sa.Engine) -> None:
    a, b = _tenants(2)
    with Session(engine) as s:
        rows = [Patient(tenant_id=t, ssn="000-00-0001", mrn="MRN-7") for t in (a, b, a)]
        s.add_all(rows)
        s.commit()
        pa, pb, pa2 = (r.id for r in rows)
        raw = {r[0]: bytes(r[1]) for r in s.execute(sa.text(f"SELECT id, mrn FROM {PATIENTS}")) if r[1] is not None}
        assert raw[pa] == raw[pa2] != raw[pb]  # equal within a tenant only
        assert _ids(s, sa.select(Patient).where(Patient.tenant_id == a, Patient.mrn == "MRN-7")) == {pa, pa2}
        stmt = sa.select(Patient).where(Patient.tenant_id.in_([a, b]), Patient.mrn.in_(["MRN-7", "MRN-8"]))
        assert _ids(s, stmt) == {pa, pa2, pb}
        with pytest.raises(coffer.ConfigError, match="to the WHERE clause"):
            s.scalars(sa.select(Patient).where(Patient.mrn == "MRN-7")).all()


def test_value_copied_to_another_tenant_fails(engine: sa.Engine) -> None:
    a, b = _tenants(2)
    with Session(engine) as s:
        pa, pb = Patient(tenant_id=a, ssn="111-11-1111"), Patient(tenant_id=b, ssn="222-22-2222")
        s.add_all([pa, pb])
        s.commit()
        ida, idb = pa.id, pb.id
        s.execute(sa.text(f"UPDATE {PATIENTS} SET tenant_id = :b WHERE id = :a"), {"a": ida, "b": b})
        s.commit()
    with Session(engine) as s, pytest.raises(coffer.DecryptionError):
        s.get(Patient, ida)
    with Session(engine) as s:
        s.execute(sa.text(f"UPDATE {PATIENTS} SET tenant_id = :t WHERE id = :a"), {"a": ida, "t": a})
        s.execute(sa.text(f"UPDATE {PATIENTS} SET ssn = (SELECT ssn FROM {PATIENTS} WHERE id = :a) WHERE id = :b"),
                  {"a": ida, "b": idb})
        s.commit()
    with Session(engine) as s:
        assert s.get(Patient, ida).ssn == "111-11-1111"
    with Session(engine) as s, pytest.raises(coffer.DecryptionError):
        s.get(Patient, idb)
    # Core: open_value takes the row's scope; another tenant's scope does not open it.
    with Session(engine) as s:
        stored = s.execute(sa.select(Patient.__table__.c.ssn).where(Patient.__table__.c.id == ida)).scalar_one()
        assert csa.open_value(Patient, "ssn", ida, stored, scope={"tenant_id": a}) == "111-11-1111"
        with pytest.raises(coffer.DecryptionError):
            csa.open_value(Patient, "ssn", ida, stored, scope={"tenant_id": b})


def test_search_without_the_tenant_is_refused(engine: sa.Engine) -> None:
    (a,) = _tenants(1)
    with Session(engine) as s:
        s.add(Patient(tenant_id=a, ssn="333-33-3333", email="x@example.org"))
        s.commit()
        for stmt in (
            sa.select(Patient).where(Patient.ssn == "333-33-3333"),
            sa.select(Patient).where(Patient.email.startswith("x@e")),
            sa.select(Patient).where(Patient.tenant_id != a, Patient.ssn == "333-33-3333"),
        ):
            with pytest.raises(coffer.ConfigError, match=rf"add {PATIENTS}\.tenant_id == … to the WHERE clause"):
                s.scalars(stmt).all()
        # Contradicting values name no scope: nothing matches.
        stmt = sa.select(Patient).where(Patient.tenant_id == a, Patient.tenant_id == "x", Patient.ssn == "333-33-3333")
        assert s.scalars(stmt).all() == []


def test_cross_tenant_search_with_in(engine: sa.Engine) -> None:
    a, b, c = _tenants(3)
    with Session(engine) as s:
        rows = [Patient(tenant_id=t, ssn="444-44-4444", email="same@example.org") for t in (a, b, c)]
        s.add_all(rows)
        s.commit()
        want = {rows[0].id, rows[1].id}
        assert _ids(s, sa.select(Patient).where(Patient.tenant_id.in_([a, b]), Patient.ssn == "444-44-4444")) == want
        assert _ids(s, sa.select(Patient).where(Patient.tenant_id.in_([a, b]), Patient.email.startswith("same@"))) == want


def test_destroyed_tenant_raises_and_others_open(engine: sa.Engine) -> None:
    a, b = _tenants(2)
    with Session(engine) as s:
        pa, pb = Patient(tenant_id=a, ssn="555-55-5555"), Patient(tenant_id=b, ssn="555-55-5555")
        s.add_all([pa, pb])
        s.commit()
        ida, idb = pa.id, pb.id
    csa._ring().destroy(f"tenant:{a}/{PATIENTS}")
    with Session(engine) as s, pytest.raises(coffer.KeyDestroyed):
        s.get(Patient, ida)
    with Session(engine) as s:
        s.add(Patient(tenant_id=a, ssn="555-55-0000"))
        with pytest.raises(coffer.KeyDestroyed):
            s.commit()
    with Session(engine) as s:
        assert s.get(Patient, idb).ssn == "555-55-5555"
        assert _ids(s, sa.select(Patient).where(Patient.tenant_id == b, Patient.ssn == "555-55-5555")) == {idb}


def test_many_rows_across_three_tenants(engine: sa.Engine) -> None:
    tenants = _tenants(3)
    with Session(engine) as s:
        rows = [Patient(tenant_id=tenants[i % 3], ssn=f"666-00-{i:04d}") for i in range(30)]
        s.add_all(rows)
        s.commit()
        ids = [r.id for r in rows]
    with Session(engine) as s:
        for i, pk in enumerate(ids):
            assert s.get(Patient, pk).ssn == f"666-00-{i:04d}"
            t = tenants[i % 3]
            assert _ids(s, sa.select(Patient).where(Patient.tenant_id == t, Patient.ssn == f"666-00-{i:04d}")) == {pk}
            other = tenants[(i + 1) % 3]
            assert _ids(s, sa.select(Patient).where(Patient.tenant_id == other, Patient.ssn == f"666-00-{i:04d}")) == set()


def test_per_row_keys_erase_one_row(engine: sa.Engine) -> None:
    a, b = _tenants(2)
    with Session(engine) as s:
        v1, v2, v3 = Visit(tenant_id=a, diagnosis="E11.9"), Visit(tenant_id=a, diagnosis="I10"), Visit(tenant_id=b, diagnosis="J45")
        s.add_all([v1, v2, v3])
        s.commit()
        ids = (v1.id, v2.id, v3.id)
        keys = {r[0]: bytes(r[1]) for r in s.execute(sa.text(f"SELECT id, row_key FROM {VISITS}"))}
        assert len({keys[i] for i in ids}) == 3
    with Session(engine) as s:  # an update keeps the row's key
        v = s.get(Visit, ids[0])
        v.diagnosis = "E11.65"
        s.commit()
        assert bytes(s.execute(sa.text(f"SELECT row_key FROM {VISITS} WHERE id = :i"), {"i": ids[0]}).scalar_one()) == keys[ids[0]]
    with Session(engine) as s:
        s.execute(sa.update(Visit).where(Visit.id == ids[1]).values(row_key=None))
        s.commit()
    with Session(engine) as s, pytest.raises(coffer.KeyDestroyed, match="row key was erased"):
        s.get(Visit, ids[1])
    with Session(engine) as s:
        assert s.get(Visit, ids[0]).diagnosis == "E11.65"
        assert s.get(Visit, ids[2]).diagnosis == "J45"


def test_bad_scope_templates_are_refused() -> None:
    md = sa.MetaData()
    for scope, why in (("tenant:{tenant}/x", r"\{tenant\} names no column"), ("tenant:{body}/x", r"\{body\} names a Coffer column")):
        t = sa.Table(
            f"bad_{secrets.token_hex(3)}", md,
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("tenant_id", sa.String(10)),
            sa.Column("body", csa.EncryptedText()),
            sa.Column("key_version", csa.KeyVersion()),
            info={"coffer_scope": scope},
        )
        with pytest.raises(coffer.ConfigError, match=why):
            csa.table_for(t)
