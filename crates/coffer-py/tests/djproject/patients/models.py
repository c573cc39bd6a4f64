"""The patients model of the Django test project."""

import uuid

from django.contrib.postgres.indexes import GinIndex
from django.db import models

from coffer.django import (
    BlindIndexField,
    CofferManager,
    EncryptedCharField,
    EncryptedDateField,
    EncryptedEmailField,
    EncryptedJSONField,
    EncryptedTextField,
    KeyVersionField,
    PrefixIndexField,
    RowKeyField,
)


class Patient(models.Model):
    coffer_scope = "table:dj_patients"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    name = models.CharField(max_length=100)
    ssn = EncryptedCharField(max_length=11)
    ssn_bidx = BlindIndexField(of="ssn", bits=32, normalize=["digits"])
    email = EncryptedEmailField()
    email_prefix = PrefixIndexField(of="email", bits=32, normalize=["trim", "casefold"], prefix=(3, 8))
    birth_date = EncryptedDateField(null=True)
    diagnoses = EncryptedJSONField(null=True)
    notes = EncryptedTextField(null=True, nulls="authenticated")
    key_version = KeyVersionField()

    objects = CofferManager()

    class Meta:
        app_label = "patients"
        db_table = "dj_patients"
        indexes = [models.Index(fields=["ssn_bidx"]), GinIndex(fields=["email_prefix"])]


class PlainPatient(models.Model):
    """The same model without encryption (the benchmark's baseline)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    name = models.CharField(max_length=100)
    ssn = models.CharField(max_length=11)
    email = models.EmailField()
    birth_date = models.DateField(null=True)
    diagnoses = models.JSONField(null=True)
    notes = models.TextField(null=True)

    class Meta:
        app_label = "patients"
        db_table = "dj_plain_patients"


class Note(models.Model):
    """A model under a scope of its own, which a test crypto-shreds."""

    coffer_scope = "table:dj_notes"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    body = EncryptedTextField()
    key_version = KeyVersionField()

    class Meta:
        app_label = "patients"
        db_table = "dj_notes"


class EncryptedPatient(models.Model):
    """PlainPatient with its personal fields encrypted and no search indexes (the benchmark)."""

    coffer_scope = "table:dj_encrypted_patients"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    name = models.CharField(max_length=100)
    ssn = EncryptedCharField(max_length=11)
    email = EncryptedEmailField()
    birth_date = EncryptedDateField(null=True)
    diagnoses = EncryptedJSONField(null=True)
    notes = EncryptedTextField(null=True)
    key_version = KeyVersionField()

    objects = CofferManager()

    class Meta:
        app_label = "patients"
        db_table = "dj_encrypted_patients"


class PlainIndexedPatient(models.Model):
    """PlainPatient with the plaintext indexes that serve the same searches as Patient's blind
    and prefix indexes (equality on ssn, LIKE 'prefix%' on email)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    name = models.CharField(max_length=100)
    ssn = models.CharField(max_length=11, db_index=True)
    email = models.EmailField()
    birth_date = models.DateField(null=True)
    diagnoses = models.JSONField(null=True)
    notes = models.TextField(null=True)

    class Meta:
        app_label = "patients"
        db_table = "dj_plain_indexed_patients"
        indexes = [models.Index(models.functions.Lower("email"), name="dj_plain_email_lower")]


class TenantPatient(models.Model):
    """Many tenants in one table: each tenant's rows under a scope of its own."""

    coffer_scope = "tenant:{tenant_id}/dj_tenant_patients"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    tenant_id = models.CharField(max_length=64)
    ssn = EncryptedCharField(max_length=11)
    ssn_bidx = BlindIndexField(of="ssn", bits=32, normalize=["digits"])
    email = EncryptedEmailField(null=True)
    email_prefix = PrefixIndexField(of="email", bits=32, normalize=["trim", "casefold"], prefix=(3, 8))
    mrn = EncryptedCharField(max_length=20, mode="deterministic", null=True)  # searched as it is
    key_version = KeyVersionField()

    objects = CofferManager()

    class Meta:
        app_label = "patients"
        db_table = "dj_tenant_patients"
        indexes = [models.Index(fields=["tenant_id", "ssn_bidx"])]


class TenantVisit(models.Model):
    """A key per row, under the tenant's scope: erasing one row's key shreds that row."""

    coffer_scope = "tenant:{tenant_id}/dj_tenant_visits"
    coffer_keys = "row"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    tenant_id = models.CharField(max_length=64)
    diagnosis = EncryptedTextField()
    diagnosis_bidx = BlindIndexField(of="diagnosis", bits=32)
    row_key = RowKeyField()
    key_version = KeyVersionField()

    objects = CofferManager()

    class Meta:
        app_label = "patients"
        db_table = "dj_tenant_visits"
