"""SQLAlchemy 2: the same flow as the Django suite, with a mapped class and a SQLite key
store."""

from __future__ import annotations

import datetime as dt
import random
import secrets
import uuid
from typing import Any, Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import coffer
import coffer.sqlalchemy as csa
from conftest import Store, while_reading

TABLE = f"sa_patients_{secrets.token_hex(3)}"


class Base(DeclarativeBase):
    pass


class Patient(Base):
    __tablename__ = TABLE
    __table_args__ = (
        sa.Index(f"{TABLE}_email_prefix", "email_prefix", postgresql_using="gin"),
        {"info": {"coffer_scope": f"table:{TABLE}"}},
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(sa.String(100))
    ssn: Mapped[str] = mapped_column(csa.EncryptedText())
    ssn_bidx: Mapped[bytes | None] = mapped_column(csa.BlindIndex("ssn", bits=32, normalize=["digits"]), index=True)
    email: Mapped[str] = mapped_column(csa.EncryptedText())
    email_prefix: Mapped[list[bytes] | None] = mapped_column(
        csa.PrefixIndex("email", bits=32, normalize=["trim", "casefold"], prefix=(3, 8))
    )
    birth_date: Mapped[dt.date | None] = mapped_column(csa.EncryptedDate(), nullable=True)
    diagnoses: Mapped[Any] = mapped_column(csa.EncryptedJSON(), nullable=True)
    visits: Mapped[int | None] = mapped_column(csa.EncryptedInteger(), nullable=True)
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


def _new(i: int) -> Patient:
    return Patient(
        name=f"p{i}",
        ssn=f"{i:03d}-22-{i:04d}",
        email=f"sa{i}.user@example.org",
        birth_date=dt.date(1960, 5, 1) + dt.timedelta(days=i),
        diagnoses={"codes": [f"C{i}"]},
        visits=i,
    )


def test_create_read_filter(engine: sa.Engine) -> None:
    with Session(engine) as s:
        p = Patient(name="Ann", ssn="123-45-6789", email="Ann.Lee@example.org", birth_date=dt.date(1980, 1, 2),
                    diagnoses={"a": 1}, visits=3)
        q = Patient(name="Bob", ssn="987-65-4321", email="bob@example.org")
        s.add_all([p, q])
        s.commit()
        pid = p.id
        assert p.ssn == "123-45-6789"  # the object holds plaintext after the flush
    with Session(engine) as s:
        got = s.get(Patient, pid)
        assert got is not None
        assert (got.ssn, got.email, got.birth_date, got.diagnoses, got.visits) == (
            "123-45-6789", "Ann.Lee@example.org", dt.date(1980, 1, 2), {"a": 1}, 3)
        raw = s.execute(sa.text(f"SELECT ssn FROM {TABLE} WHERE id = :i"), {"i": pid}).scalar_one()
        assert b"123-45-6789" not in bytes(raw)
        assert [x.id for x in s.scalars(sa.select(Patient).where(Patient.ssn == "123 45 6789"))] == [pid]
        assert [x.id for x in s.scalars(sa.select(Patient).where(Patient.email.startswith("ANN.L")))] == [pid]
        assert {x.name for x in s.scalars(sa.select(Patient).where(Patient.ssn.in_(["123-45-6789", "987-65-4321"])))} == {"Ann", "Bob"}
        with pytest.raises(coffer.CofferError):
            Patient.ssn > "1"  # noqa: B015 - the comparison itself raises
        # Core: a plaintext cannot be bound into an encrypted column.
        with pytest.raises(sa.exc.StatementError):
            s.execute(sa.update(Patient).where(Patient.id == pid).values(ssn="111-11-1111"))
        s.rollback()
        # Core select returns sealed values; open_value opens them with the row id.
        stored = s.execute(sa.select(Patient.__table__.c.ssn).where(Patient.__table__.c.id == pid)).scalar_one()
        assert "123-45-6789" not in repr(stored)
        assert csa.open_value(Patient, "ssn", pid, stored) == "123-45-6789"


def test_update_reseals(engine: sa.Engine) -> None:
    with Session(engine) as s:
        p = _new(900)
        s.add(p)
        s.commit()
        p.ssn = "900-00-0001"
        s.commit()
        pid = p.id
    with Session(engine) as s:
        assert s.get(Patient, pid).ssn == "900-00-0001"
        assert [x.id for x in s.scalars(sa.select(Patient).where(Patient.ssn == "900-00-0001"))] == [pid]


def test_rotation_and_reencrypt_while_reads_continue(engine: sa.Engine, sqlite_store: Store, pg_database: str) -> None:
    with Session(engine) as s:
        made = [_new(i) for i in range(300)]
        s.add_all(made)
        s.commit()
        expected = {p.id: (p.ssn, p.email, p.birth_date, p.diagnoses, p.visits) for p in made}
    keyring = sqlite_store.keyring()
    # The integration's own keyring rotates, so its cached pointer moves at once.
    ring = csa._ring()
    ring.rotate(f"table:{TABLE}")
    active = ring.active_version(f"table:{TABLE}")
    assert keyring.active_version(f"table:{TABLE}") == active
    ids = list(expected)

    def read_once() -> None:
        with Session(engine) as s:
            pk = random.choice(ids)
            p = s.get(Patient, pk)
            assert (p.ssn, p.email, p.birth_date, p.diagnoses, p.visits) == expected[pk]

    report, reads = while_reading(lambda: csa.reencrypt(Patient, pg_database, batch_size=40), read_once)
    assert reads > 0 and report["pending"] == 0 and report["active_version"] == active
    with Session(engine) as s:
        versions = s.execute(sa.text(f"SELECT DISTINCT key_version FROM {TABLE}")).scalars().all()
        assert versions == [active]
        for p in s.scalars(sa.select(Patient).where(Patient.id.in_(ids))):
            assert (p.ssn, p.email, p.birth_date, p.diagnoses, p.visits) == expected[p.id]
        pk = ids[17]
        assert [x.id for x in s.scalars(sa.select(Patient).where(Patient.ssn == expected[pk][0]))] == [pk]


def test_reencrypt_right_after_a_rotation_by_another_keyring(engine: sa.Engine, sqlite_store: Store, pg_database: str) -> None:
    """The integration's keyring has the old active version cached; another Keyring object of
    this process rotates. The re-encryption reads the active version from the key store, moves
    every row, and says none is left."""
    with Session(engine) as s:
        s.add_all([_new(2000 + i) for i in range(201)])
        s.commit()
        total = s.execute(sa.text(f"SELECT count(*) FROM {TABLE}")).scalar_one()
    ring = csa._ring()
    before = ring.active_version(f"table:{TABLE}")
    other = sqlite_store.keyring()
    active = other.rotate(f"table:{TABLE}")
    assert active > before
    report = csa.reencrypt(Patient, pg_database, batch_size=50)
    assert report["active_version"] == active
    assert report["rows"] == total and report["pending"] == 0, report
    with Session(engine) as s:
        versions = s.execute(sa.text(f"SELECT DISTINCT key_version FROM {TABLE}")).scalars().all()
        assert versions == [active]
    # The integration's own writes follow the rotation too.
    assert ring.active_version(f"table:{TABLE}") == active


def test_tampered_copied_and_destroyed(engine: sa.Engine) -> None:
    with Session(engine) as s:
        a, b = _new(501), _new(502)
        s.add_all([a, b])
        s.commit()
        ida, idb = a.id, b.id
        s.execute(sa.text(f"UPDATE {TABLE} SET ssn = set_byte(ssn, 15, get_byte(ssn, 15) # 128) WHERE id = :i"), {"i": ida})
        s.execute(sa.text(f"UPDATE {TABLE} SET email = (SELECT email FROM {TABLE} WHERE id = :b) WHERE id = :a"),
                  {"a": idb, "b": ida})
        s.commit()
    with Session(engine) as s:
        with pytest.raises(coffer.DecryptionError):
            s.get(Patient, ida)
    with Session(engine) as s:
        with pytest.raises(coffer.DecryptionError):
            s.get(Patient, idb)


class Secret(Base):
    __tablename__ = f"{TABLE}_secrets"
    __table_args__ = {"info": {"coffer_scope": f"table:{TABLE}_secrets"}}
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    body: Mapped[str] = mapped_column(csa.EncryptedText())
    key_version: Mapped[int | None] = mapped_column(csa.KeyVersion())


def test_destroyed_scope(engine: sa.Engine) -> None:
    with Session(engine) as s:
        x = Secret(body="shred me")
        s.add(x)
        s.commit()
        xid = x.id
    csa._ring().destroy(f"table:{TABLE}_secrets")
    with Session(engine) as s:
        with pytest.raises(coffer.KeyDestroyed):
            s.get(Secret, xid)
