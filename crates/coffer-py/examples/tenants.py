# Many tenants in one table, and erasing one patient: docs/PYTHON.md §5, as run. In a directory
# where `coffer keys init` wrote coffer.toml (its KEK variable set), with DATABASE_URL naming a
# PostgreSQL database the script may create two tables in:
#
#   DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1/clinic python tenants.py
import os
import uuid

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import coffer
import coffer.sqlalchemy as csa


class Base(DeclarativeBase):
    pass


class Patient(Base):  # one table, a scope (a DEK chain) per tenant
    __tablename__ = "tenant_patients"
    __table_args__ = {"info": {"coffer_scope": "tenant:{tenant_id}/patients"}}
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[str] = mapped_column(sa.String(64))
    ssn: Mapped[str] = mapped_column(csa.EncryptedText())
    ssn_bidx: Mapped[bytes | None] = mapped_column(csa.BlindIndex("ssn", normalize=["digits"]))
    key_version: Mapped[int | None] = mapped_column(csa.KeyVersion())


class Note(Base):  # a scope per patient: destroying it erases that patient's notes
    __tablename__ = "patient_notes"
    __table_args__ = {"info": {"coffer_scope": "patient:{patient_id}/notes"}}
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    patient_id: Mapped[uuid.UUID] = mapped_column()
    body: Mapped[str] = mapped_column(csa.EncryptedText())
    key_version: Mapped[int | None] = mapped_column(csa.KeyVersion())


ring = coffer.Keyring("coffer.toml")
csa.configure(ring)
engine = sa.create_engine(os.environ["DATABASE_URL"])
Base.metadata.drop_all(engine)
Base.metadata.create_all(engine)

with Session(engine) as s:
    acme = Patient(tenant_id="acme", ssn="123-45-6789")
    globex = Patient(tenant_id="globex", ssn="123-45-6789")  # the same SSN in another tenant
    s.add_all([acme, globex])
    s.commit()  # each tenant's scope is created on its first write
    print(acme.ssn_bidx != globex.ssn_bidx)  # True: other tenant, other key, other index term
    found = s.scalars(sa.select(Patient).where(Patient.tenant_id == "acme", Patient.ssn == "123 45 6789"))
    print([p.tenant_id for p in found])  # ['acme']
    both = s.scalars(sa.select(Patient).where(Patient.tenant_id.in_(["acme", "globex"]), Patient.ssn == "123-45-6789"))
    print(sorted(p.tenant_id for p in both))  # ['acme', 'globex']
    try:
        s.scalars(sa.select(Patient).where(Patient.ssn == "123-45-6789")).all()
    except coffer.ConfigError as e:
        print(type(e).__name__)  # ConfigError: the message says to add tenant_patients.tenant_id == …

    ann, bob = uuid.uuid4(), uuid.uuid4()
    s.add_all([Note(patient_id=ann, body="ann: E11.9"), Note(patient_id=bob, body="bob: I10")])
    s.commit()

ring.destroy(f"patient:{ann}/notes")  # erase Ann (or: coffer keys erase-subject, docs/KEYS.md)
with Session(engine) as s:
    print(s.scalars(sa.select(Note).where(Note.patient_id == bob)).one().body)  # bob: I10
    try:
        s.scalars(sa.select(Note).where(Note.patient_id == ann)).one()
    except coffer.KeyDestroyed:
        print("KeyDestroyed")  # Ann's notes are crypto-shredded, in the table and in its backups
