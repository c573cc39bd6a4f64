"""Coffer for Django: encrypted model fields, blind-index lookups and the re-encryption
command.

Add ``"coffer.django"`` to ``INSTALLED_APPS`` (for the ``coffer_reencrypt`` management
command) and, optionally, ``COFFER = {"CONFIG": "/etc/coffer/coffer.toml"}`` to the settings
(default: the ``COFFER_CONFIG`` environment variable, else ``coffer.toml``).

.. code-block:: python

    import uuid
    from django.db import models
    from coffer.django import (EncryptedCharField, EncryptedEmailField, BlindIndexField,
                               PrefixIndexField, KeyVersionField)

    class Patient(models.Model):
        coffer_scope = "table:patients"            # default: "table:<db_table>"
        id = models.UUIDField(primary_key=True, default=uuid.uuid4)
        ssn = EncryptedCharField(max_length=11)
        ssn_bidx = BlindIndexField(of="ssn", bits=32, normalize=["digits"])
        email = EncryptedEmailField()
        email_prefix = PrefixIndexField(of="email", bits=32, normalize=["trim", "casefold"],
                                        prefix=(3, 8))
        key_version = KeyVersionField()

    Patient.objects.filter(ssn="123-45-6789")      # through ssn_bidx
    Patient.objects.filter(email__startswith="ann")   # through email_prefix
"""

from coffer.django.fields import (
    BlindIndexField,
    CofferManager,
    CofferQuerySet,
    EncryptedBinaryField,
    EncryptedBooleanField,
    EncryptedCharField,
    EncryptedDateField,
    EncryptedDateTimeField,
    EncryptedEmailField,
    EncryptedField,
    EncryptedIntegerField,
    EncryptedJSONField,
    EncryptedTextField,
    EncryptedUUIDField,
    KeyVersionField,
    PrefixIndexField,
    RowKeyField,
    keyring,
    reencrypt,
    search,
    table_for,
)

__all__ = [
    "BlindIndexField",
    "CofferManager",
    "CofferQuerySet",
    "EncryptedBinaryField",
    "EncryptedBooleanField",
    "EncryptedCharField",
    "EncryptedDateField",
    "EncryptedDateTimeField",
    "EncryptedEmailField",
    "EncryptedField",
    "EncryptedIntegerField",
    "EncryptedJSONField",
    "EncryptedTextField",
    "EncryptedUUIDField",
    "KeyVersionField",
    "PrefixIndexField",
    "RowKeyField",
    "keyring",
    "reencrypt",
    "search",
    "table_for",
]
