"""Django: scope templates (one scope per tenant in one table) and per-row keys, on
PostgreSQL with a PostgreSQL key store (docs/PYTHON.md §3, docs/COLUMNS.md §7–8)."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

import coffer
from conftest import raw_sql


def _tenants(n: int) -> list[str]:
    """Tenant ids of this test only (the key store lives for the whole session)."""
    tag = secrets.token_hex(3)
    return [f"t{i}-{tag}" for i in range(n)]


def _patients(dj: Any) -> Any:
    from djproject.patients.models import TenantPatient

    return TenantPatient


def test_two_tenants_same_ssn_differ_and_stay_apart(dj: Any) -> None:
    P = _patients(dj)
    a, b = _tenants(2)
    pa = P.objects.create(tenant_id=a, ssn="123-45-6789", email="ann@example.org")
    pb = P.objects.create(tenant_id=b, ssn="123-45-6789", email="ann@example.org")
    (ca, ia), (cb, ib) = (
        raw_sql("SELECT ssn, ssn_bidx FROM dj_tenant_patients WHERE id = %s", [p.pk])[0] for p in (pa, pb)
    )
    assert bytes(ca) != bytes(cb) and bytes(ia) != bytes(ib)  # other scope, other key: other terms
    assert P.objects.get(pk=pa.pk).ssn == "123-45-6789" and P.objects.get(pk=pb.pk).ssn == "123-45-6789"
    # Tenant B's query returns B's row only, even run on the whole table: A's row has other terms.
    assert [x.pk for x in P.objects.filter(tenant_id=b, ssn="123 45 6789")] == [pb.pk]
    assert [x.pk for x in P.objects.filter(tenant_id=b, email__startswith="ANN@")] == [pb.pk]
    from coffer.django import table_for

    mt = table_for(P)
    terms_b = mt.table.search_eq("ssn_bidx", [b"123-45-6789"], scope={"tenant_id": b}).terms
    rows = raw_sql("SELECT id FROM dj_tenant_patients WHERE ssn_bidx = ANY(%s)", [terms_b])
    assert [r[0] for r in rows] == [pb.pk]
    # filter() then filter() is one AND: the scope is found as well.
    assert [x.pk for x in P.objects.filter(tenant_id=a).filter(ssn="123-45-6789")] == [pa.pk]


def test_deterministic_column_per_tenant(dj: Any) -> None:
    P = _patients(dj)
    a, b = _tenants(2)
    pa = P.objects.create(tenant_id=a, ssn="000-00-0001", mrn="MRN-7")
    pb = P.objects.create(tenant_id=b, ssn="000-00-0002", mrn="MRN-7")
    pa2 = P.objects.create(tenant_id=a, ssn="000-00-0003", mrn="MRN-7")
    raw = dict(raw_sql("SELECT id, mrn FROM dj_tenant_patients WHERE id = ANY(%s)", [[pa.pk, pb.pk, pa2.pk]]))
    assert bytes(raw[pa.pk]) == bytes(raw[pa2.pk]) != bytes(raw[pb.pk])  # equal within a tenant only
    assert {x.pk for x in P.objects.filter(tenant_id=a, mrn="MRN-7")} == {pa.pk, pa2.pk}
    assert {x.pk for x in P.objects.filter(tenant_id__in=[a, b], mrn__in=["MRN-7", "MRN-8"])} == {pa.pk, pa2.pk, pb.pk}
    with pytest.raises(coffer.ConfigError, match=r"add tenant_id=… to the filter"):
        list(P.objects.filter(mrn="MRN-7"))


def test_value_copied_to_another_tenant_or_tenant_changed_fails(dj: Any) -> None:
    P = _patients(dj)
    a, b = _tenants(2)
    pa = P.objects.create(tenant_id=a, ssn="111-11-1111")
    pb = P.objects.create(tenant_id=b, ssn="222-22-2222")
    # A's row relabelled as tenant B: its values no longer open.
    raw_sql("UPDATE dj_tenant_patients SET tenant_id = %s WHERE id = %s", [b, pa.pk])
    with pytest.raises(coffer.DecryptionError):
        P.objects.get(pk=pa.pk).ssn
    raw_sql("UPDATE dj_tenant_patients SET tenant_id = %s WHERE id = %s", [a, pa.pk])
    assert P.objects.get(pk=pa.pk).ssn == "111-11-1111"
    # A's ciphertext copied into B's row.
    raw_sql(
        "UPDATE dj_tenant_patients SET ssn = (SELECT ssn FROM dj_tenant_patients WHERE id = %s) WHERE id = %s",
        [pa.pk, pb.pk],
    )
    with pytest.raises(coffer.DecryptionError):
        P.objects.get(pk=pb.pk).ssn


def test_search_without_the_tenant_is_refused_naming_the_filter(dj: Any) -> None:
    P = _patients(dj)
    (a,) = _tenants(1)
    P.objects.create(tenant_id=a, ssn="333-33-3333", email="x@example.org")
    for qs in (
        P.objects.filter(ssn="333-33-3333"),
        P.objects.filter(ssn__in=["333-33-3333"]),
        P.objects.filter(email__startswith="x@e"),
        P.objects.exclude(tenant_id=a).filter(ssn="333-33-3333"),  # a negated filter names no scope
    ):
        with pytest.raises(coffer.ConfigError, match=r"add tenant_id=… to the filter"):
            list(qs)
    # Contradicting values name no scope: nothing matches, nothing is refused.
    assert not P.objects.filter(tenant_id=a).filter(tenant_id="other", ssn="333-33-3333").exists()


def test_cross_tenant_search_with_tenant_in(dj: Any) -> None:
    P = _patients(dj)
    a, b, c = _tenants(3)
    pa = P.objects.create(tenant_id=a, ssn="444-44-4444", email="same@example.org")
    pb = P.objects.create(tenant_id=b, ssn="444-44-4444", email="same@example.org")
    P.objects.create(tenant_id=c, ssn="444-44-4444", email="same@example.org")
    got = P.objects.filter(tenant_id__in=[a, b], ssn="444-44-4444")
    assert {x.pk for x in got} == {pa.pk, pb.pk}
    got = P.objects.filter(tenant_id__in=[a, b], email__startswith="same@")
    assert {x.pk for x in got} == {pa.pk, pb.pk}
    from coffer.django import search

    assert {x.pk for x in search(P.objects.filter(tenant_id__in=[a, b]), ssn="444 44 4444")} == {pa.pk, pb.pk}


def test_destroyed_tenant_raises_and_others_open(dj: Any) -> None:
    P = _patients(dj)
    a, b = _tenants(2)
    pa = P.objects.create(tenant_id=a, ssn="555-55-5555")
    pb = P.objects.create(tenant_id=b, ssn="555-55-5555")
    ring = coffer.django.keyring()
    ring.destroy(f"tenant:{a}/dj_tenant_patients")
    got = P.objects.get(pk=pa.pk)  # the row loads; its values do not open
    with pytest.raises(coffer.KeyDestroyed):
        got.ssn
    with pytest.raises(coffer.KeyDestroyed):
        P.objects.create(tenant_id=a, ssn="555-55-0000")  # a destroyed scope is never made again
    with pytest.raises(coffer.KeyDestroyed):
        list(P.objects.filter(tenant_id=a, ssn="555-55-5555"))
    assert P.objects.get(pk=pb.pk).ssn == "555-55-5555"
    assert [x.pk for x in P.objects.filter(tenant_id=b, ssn="555-55-5555")] == [pb.pk]


def test_bulk_create_across_three_tenants_seals_once_per_tenant(dj: Any) -> None:
    from coffer.django import table_for

    P = _patients(dj)
    tenants = _tenants(3)
    mt = table_for(P)
    calls: list[Any] = []

    class Counting:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def seal_many(self, *args: Any, **kwargs: Any) -> Any:
            calls.append(kwargs.get("scope"))
            return self.inner.seal_many(*args, **kwargs)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    rows = [P(tenant_id=tenants[i % 3], ssn=f"666-00-{i:04d}", email=f"u{i}@example.org") for i in range(30)]
    real = mt.table
    mt.table = Counting(real)
    try:
        P.objects.bulk_create(rows)
    finally:
        mt.table = real
    assert sorted(c["tenant_id"] for c in calls) == sorted(tenants)
    for i, r in enumerate(rows):
        got = P.objects.get(pk=r.pk)
        assert (got.tenant_id, got.ssn, got.email) == (tenants[i % 3], f"666-00-{i:04d}", f"u{i}@example.org")
        assert [x.pk for x in P.objects.filter(tenant_id=tenants[i % 3], ssn=f"666-00-{i:04d}")] == [r.pk]
        assert not P.objects.filter(tenant_id=tenants[(i + 1) % 3], ssn=f"666-00-{i:04d}").exists()


def test_per_row_keys_erase_one_row(dj: Any) -> None:
    from djproject.patients.models import TenantVisit as V

    a, b = _tenants(2)
    v1 = V.objects.create(tenant_id=a, diagnosis="E11.9")
    v2 = V.objects.create(tenant_id=a, diagnosis="I10")
    v3 = V.objects.create(tenant_id=b, diagnosis="J45")
    keys = dict(raw_sql("SELECT id, row_key FROM dj_tenant_visits WHERE id = ANY(%s)", [[v1.pk, v2.pk, v3.pk]]))
    assert all(k is not None for k in keys.values()) and len({bytes(k) for k in keys.values()}) == 3
    # An update keeps the row's key.
    got = V.objects.get(pk=v1.pk)
    got.diagnosis = "E11.65"
    got.save()
    assert bytes(raw_sql("SELECT row_key FROM dj_tenant_visits WHERE id = %s", [v1.pk])[0][0]) == bytes(keys[v1.pk])
    assert V.objects.get(pk=v1.pk).diagnosis == "E11.65"
    assert [x.pk for x in V.objects.filter(tenant_id=a, diagnosis="I10")] == [v2.pk]
    # Erase v2's key: v2 is shredded, its neighbours open.
    V.objects.filter(pk=v2.pk).update(row_key=None)
    with pytest.raises(coffer.KeyDestroyed, match="row key was erased"):
        V.objects.get(pk=v2.pk).diagnosis
    assert V.objects.get(pk=v1.pk).diagnosis == "E11.65"
    assert V.objects.get(pk=v3.pk).diagnosis == "J45"
    # A key from another row does not open this one.
    raw_sql("UPDATE dj_tenant_visits SET row_key = %s WHERE id = %s", [bytes(keys[v1.pk]), v2.pk])
    with pytest.raises(coffer.DecryptionError):
        V.objects.get(pk=v2.pk).diagnosis
    # bulk_create gives every row its own key.
    made = V.objects.bulk_create([V(tenant_id=[a, b][i % 2], diagnosis=f"Z{i}") for i in range(6)])
    ks = raw_sql("SELECT row_key FROM dj_tenant_visits WHERE id = ANY(%s)", [[m.pk for m in made]])
    assert len({bytes(k[0]) for k in ks}) == 6
    assert [V.objects.get(pk=m.pk).diagnosis for m in made] == [f"Z{i}" for i in range(6)]


def test_bad_scope_templates_fail_at_class_setup(dj: Any) -> None:
    from django.db import models

    from coffer.django import EncryptedTextField, KeyVersionField

    def make(name: str, scope: str, **extra: Any) -> None:
        attrs = {
            "__module__": __name__,
            "coffer_scope": scope,
            "tenant_id": models.CharField(max_length=10),
            "body": EncryptedTextField(),
            "key_version": KeyVersionField(),
            "Meta": type("Meta", (), {"app_label": "patients", "db_table": name.lower()}),
            **extra,
        }
        type(name, (models.Model,), attrs)

    tag = secrets.token_hex(3)
    with pytest.raises(coffer.ConfigError, match=r"\{tenant\} names no field"):
        make(f"BadScope1{tag}", "tenant:{tenant}/x")
    with pytest.raises(coffer.ConfigError, match=r"\{body\} names the Coffer field 'body'"):
        make(f"BadScope2{tag}", "tenant:{body}/x")
    with pytest.raises(coffer.ConfigError, match="RowKeyField"):
        make(f"BadScope3{tag}", "tenant:{tenant_id}/x", coffer_keys="row")
