"""The keyring from Python: round trips, batches, blind indexes, errors, reprs, fork."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import traceback
import uuid

import pytest

import coffer
from coffer import values
from conftest import Store, unique_scope


def test_round_trip_binds_row_column_scope_and_type(keyring: coffer.Keyring, scope: str) -> None:
    ct = keyring.encrypt(scope, "patients.ssn", "123-45-6789", context="row-1", type="text")
    assert isinstance(ct, bytes) and b"123-45-6789" not in ct
    assert len(ct) == len("123-45-6789") + 25  # 1 header + 12 IV + 12 tag
    assert keyring.decrypt(scope, "patients.ssn", ct, context="row-1", type="text") == "123-45-6789"
    with pytest.raises(coffer.DecryptionError):
        keyring.decrypt(scope, "patients.ssn", ct, context="row-2", type="text")
    with pytest.raises(coffer.DecryptionError):
        keyring.decrypt(scope, "patients.email", ct, context="row-1", type="text")
    with pytest.raises(coffer.DecryptionError):
        keyring.decrypt(scope, "patients.ssn", ct, context="row-1", type="bytes")
    other = unique_scope()
    keyring.create_scope(other)
    with pytest.raises(coffer.DecryptionError):
        keyring.decrypt(other, "patients.ssn", ct, context="row-1", type="text")


def test_every_single_bit_flip_is_rejected(keyring: coffer.Keyring, scope: str) -> None:
    ct = keyring.encrypt(scope, "c", b"x" * 20, context=["tenant-1", "row-9"])
    for i in range(len(ct) * 8):
        bad = bytearray(ct)
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises((coffer.DecryptionError, coffer.UnknownKey)):
            keyring.decrypt(scope, "c", bytes(bad), context=["tenant-1", "row-9"])
    with pytest.raises(coffer.DecryptionError):
        keyring.decrypt(scope, "c", ct[:-1], context=["tenant-1", "row-9"])


def test_authenticated_null_and_empty_are_distinct(keyring: coffer.Keyring, scope: str) -> None:
    n = keyring.encrypt(scope, "c", None, context="r")
    e = keyring.encrypt(scope, "c", b"", context="r")
    assert keyring.decrypt(scope, "c", n, context="r") is None
    assert keyring.decrypt(scope, "c", e, context="r") == b""


def test_deterministic_mode_is_equal_for_equal_values(keyring: coffer.Keyring, scope: str) -> None:
    a = keyring.encrypt(scope, "mrn", "MRN-1", domain="tenant-1", type="text", mode="deterministic")
    b = keyring.encrypt(scope, "mrn", "MRN-1", domain="tenant-1", type="text", mode="deterministic")
    c = keyring.encrypt(scope, "mrn", "MRN-1", domain="tenant-2", type="text", mode="deterministic")
    assert a == b != c
    with pytest.raises(coffer.ConfigError):
        keyring.encrypt(scope, "mrn", "MRN-1", context="row", mode="deterministic")


@pytest.mark.parametrize(
    "value_type,value",
    [
        ("text", "Ann Lee ☕"),
        ("bytes", b"\x00\xff"),
        ("int", -(2**63)),
        ("bool", True),
        ("date", dt.date(1969, 12, 31)),
        ("timestamp", dt.datetime(2026, 11, 24, 2, 0, 1, 123456, tzinfo=dt.timezone.utc)),
        ("json", {"b": [1, 2.5, None], "a": "x"}),
        ("uuid", uuid.UUID("12345678-1234-5678-1234-567812345678")),
    ],
)
def test_typed_values_round_trip(keyring: coffer.Keyring, scope: str, value_type: str, value: object) -> None:
    canon = values.encode(value_type, value)
    ct = keyring.encrypt(scope, "c", canon, context="r", type=value_type)
    back = keyring.decrypt(scope, "c", ct, context="r", type=value_type)
    raw = back.encode() if isinstance(back, str) else back
    assert values.decode(value_type, raw) == value


def test_canonical_encodings_match_the_format_table() -> None:
    assert values.encode("int", 42) == b"\x00" * 7 + b"\x2a"
    assert values.encode("date", dt.date(1970, 1, 2)) == b"\x00\x00\x00\x01"
    ts = dt.datetime(1970, 1, 1, 0, 0, 1, tzinfo=dt.timezone.utc)
    assert values.encode("timestamp", ts) == (1_000_000).to_bytes(8, "big")
    assert values.encode("json", {"b": 1, "a": [True]}) == b'{"a":[true],"b":1}'
    with pytest.raises(coffer.ConfigError):
        values.encode("timestamp", dt.datetime(2020, 1, 1))  # naive
    with pytest.raises(coffer.ConfigError):
        values.encode("int", "12")


def test_json_fast_path_gives_the_json_dumps_bytes() -> None:
    import json

    from coffer._native import canonical_json, canonical_json_of

    samples = [
        {"codes": ["E11.9", "I10"], "n": 3, "ok": True, "none": None},
        {"b": 1, "a": {"z": [1, 2.5, -0.0, 1e21, 1e-7], "é": "ünï\u2028\"\\"}},
        [1, 18446744073709551615, -9223372036854775808, 0.1, 100.0, (1, 2)],
        "text",
        12,
        3.14159,
        False,
        None,
        {"\U0001f600": "emoji", "\u00e9": "é", "e": "plain"},
    ]
    for v in samples:
        want = canonical_json(json.dumps(v, ensure_ascii=False, allow_nan=False))
        assert canonical_json_of(v) == want, v
        assert values.encode("json", v) == want
    # What it does not take goes through json.dumps (and its errors).
    for v in ({1: "int key"}, 2**70, float("nan"), {"x": object()}, {1.5}):
        assert canonical_json_of(v) is None, v
    assert values.encode("json", {1: "a"}) == canonical_json('{"1": "a"}')
    with pytest.raises(coffer.ConfigError):
        values.encode("json", {"x": float("inf")})


def test_batches_match_single_calls(keyring: coffer.Keyring, scope: str) -> None:
    n = 3000
    pts = [f"value-{i}".encode() for i in range(n)]
    ctxs = [str(i) for i in range(n)]
    cts = keyring.encrypt_batch(scope, "c", pts, contexts=ctxs)
    assert len(cts) == n and len(set(cts)) == n
    assert keyring.decrypt(scope, "c", cts[1234], context="1234") == b"value-1234"
    assert keyring.decrypt_batch(scope, "c", cts, contexts=ctxs) == pts
    swapped = list(cts)
    swapped[7], swapped[8] = swapped[8], swapped[7]
    with pytest.raises(coffer.DecryptionError, match="value 7"):
        keyring.decrypt_batch(scope, "c", swapped, contexts=ctxs)
    with pytest.raises(coffer.ConfigError):
        keyring.encrypt_batch(scope, "c", pts, contexts=ctxs[:-1])
    assert keyring.encrypt_batch(scope, "c", []) == []


def test_blind_index_and_terms_across_rotation(keyring: coffer.Keyring, scope: str) -> None:
    a = keyring.blind_index(scope, "ssn", "ssn_bidx", "123-45-6789", bits=32, normalize=["digits"])
    b = keyring.blind_index(scope, "ssn", "ssn_bidx", "123 45 6789", bits=32, normalize=["digits"])
    assert a == b and len(a) == 4
    assert keyring.blind_index(scope, "ssn", "ssn_bidx", "123456780", bits=32, normalize=["digits"]) != a
    assert keyring.blind_index_terms(scope, "ssn", "ssn_bidx", "123456789", normalize=["digits"]) == [a]
    old = keyring.encrypt(scope, "c", b"old", context="r")
    assert keyring.rotate(scope) == 2
    keyring.clear_cache()
    terms = keyring.blind_index_terms(scope, "ssn", "ssn_bidx", "123456789", normalize=["digits"])
    assert len(terms) == 2 and a in terms
    new = keyring.encrypt(scope, "c", b"new", context="r")
    assert old[0] != new[0] or old[:2] != new[:2]  # the header names another version
    assert keyring.decrypt(scope, "c", old, context="r") == b"old"
    assert keyring.active_version(scope) == 2
    with pytest.raises(coffer.ConfigError):
        keyring.blind_index(scope, "ssn", "x", "1", normalize=["nonsense"])


def test_destroyed_scope_raises_key_destroyed(keyring: coffer.Keyring) -> None:
    s = unique_scope()
    keyring.create_scope(s)
    ct = keyring.encrypt(s, "c", b"gone soon", context="r")
    keyring.destroy(s)
    with pytest.raises(coffer.KeyDestroyed) as e:
        keyring.decrypt(s, "c", ct, context="r")
    assert "crypto-shredded" in str(e.value)
    with pytest.raises(coffer.KeyDestroyed):
        keyring.encrypt(s, "c", b"x", context="r")


def test_unknown_scope_and_bad_arguments(keyring: coffer.Keyring) -> None:
    with pytest.raises(coffer.UnknownKey, match="create-scope"):
        keyring.encrypt("never:created", "c", b"x")
    with pytest.raises(coffer.ConfigError):
        keyring.encrypt("s", "c", b"x", type="float")
    with pytest.raises(coffer.ConfigError):
        keyring.encrypt("s", "c", b"x", mode="ecb")
    with pytest.raises(TypeError):
        keyring.encrypt("s", "c", 12)  # type: ignore[arg-type]
    with pytest.raises(coffer.DecryptionError):
        keyring.decrypt("s", "c", b"")
    assert issubclass(coffer.DecryptionError, coffer.CofferError)
    assert issubclass(coffer.KeyDestroyed, coffer.CofferError)
    assert issubclass(coffer.ConfigError, coffer.CofferError)


def test_config_errors(tmp_path) -> None:
    with pytest.raises(coffer.ConfigError, match="cannot read"):
        coffer.Keyring(str(tmp_path / "missing.toml")).open()
    bad = tmp_path / "bad.toml"
    bad.write_text('[store]\nurl = "sqlite:x.db"\n')
    with pytest.raises(coffer.ConfigError, match="kek"):
        coffer.Keyring(str(bad)).open()
    with pytest.raises(coffer.ConfigError):
        coffer.Keyring.from_toml("not toml [").open()


def test_open_refuses_a_wrong_kek(sqlite_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """`open()` proves the KEK: other key material under the configured id fails there, before
    any write could wrap a key nobody can open."""
    import base64
    import secrets

    monkeypatch.setenv("COFFER_TEST_KEK", base64.b64encode(secrets.token_bytes(32)).decode())
    with pytest.raises(coffer.KeyStateError, match="'main/v1' does not match the key store"):
        coffer.Keyring(str(sqlite_store.config)).open()
    monkeypatch.setenv("COFFER_TEST_KEK", sqlite_store.env["COFFER_TEST_KEK"])
    coffer.Keyring(str(sqlite_store.config)).open()


def test_no_secret_in_repr_or_traceback(sqlite_store: Store, keyring: coffer.Keyring, scope: str) -> None:
    kek = sqlite_store.env["COFFER_TEST_KEK"]
    secret = "SSN-987-65-4321"
    ct = keyring.encrypt(scope, "c", secret, context="r", type="text")
    texts = [repr(keyring), repr(coffer.FieldKey("env:COFFER_TEST_KEK"))]
    try:
        keyring.decrypt(scope, "c", ct, context="other", type="text")
    except coffer.DecryptionError:
        texts.append(traceback.format_exc())
    assert "decryption failed" in texts[-1]
    for t in texts:
        assert kek not in t and secret not in t and ct.hex() not in t


def _child(keyring: coffer.Keyring, scope: str, ct: bytes, q: "multiprocessing.Queue[object]") -> None:
    try:
        q.put((os.getpid(), keyring.decrypt(scope, "c", ct, context="r"),
               keyring.decrypt_batch(scope, "c", keyring.encrypt_batch(scope, "c", [b"a", b"b"]))))
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        q.put(repr(e))


def test_batch_arguments_in_every_shape(keyring: coffer.Keyring, scope: str) -> None:
    col = keyring.column(scope, "shapes")
    n = 2500  # several work units of the pipelined batch
    pts = [f"v{i}".encode() for i in range(n)]
    ctxs: list = [None if i % 3 == 0 else (f"row-{i}" if i % 3 == 1 else ["tenant", str(i)]) for i in range(n)]
    # A tuple and a generator work like a list; str and bytearray values like bytes.
    cts = col.encrypt_batch(tuple(pts), contexts=(c for c in ctxs))
    for i in (0, 1, 2, 1023, 1024, 2499):
        c = ctxs[i]
        assert col.decrypt(cts[i], context=c) == pts[i], i
    assert col.decrypt_batch(cts, contexts=ctxs) == pts
    mixed = col.encrypt_batch(["text", bytearray(b"ba"), b"b"])
    assert col.decrypt_batch(mixed) == [b"text", b"ba", b"b"]
    # Values sealed under two versions open in one batch.
    keyring.rotate(scope)
    newer = col.encrypt_batch(pts[:10], contexts=ctxs[:10])
    assert col.decrypt_batch(cts[:10] + newer, contexts=ctxs[:10] * 2) == pts[:10] * 2
    # Bad shapes are named.
    with pytest.raises(TypeError, match=r"plaintexts\[1\]"):
        col.encrypt_batch([b"ok", 5])
    with pytest.raises(TypeError, match=r"contexts\[1\]\[0\]"):
        col.encrypt_batch([b"a", b"b"], contexts=["x", [7]])
    with pytest.raises(TypeError, match="sequence"):
        col.encrypt_batch(b"one value")
    with pytest.raises(coffer.ConfigError, match="2 entries for 3 values"):
        col.decrypt_batch(cts[:3], contexts=ctxs[:2])
    # The first value that fails is named, past the first work unit too.
    bad = list(cts)
    bad[2100] = cts[2101]
    with pytest.raises(coffer.DecryptionError, match="value 2100"):
        col.decrypt_batch(bad, contexts=ctxs)


def test_keyring_works_in_forked_children(keyring: coffer.Keyring, scope: str) -> None:
    # The parent has used the keyring (runtime, pools, batch threads) before forking.
    ct = keyring.encrypt(scope, "c", b"before fork", context="r")
    keyring.encrypt_batch(scope, "c", [b"x"] * 600)
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_child, args=(keyring, scope, ct, q)) for _ in range(3)]
    for p in procs:
        p.start()
    results = [q.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for r in results:
        assert isinstance(r, tuple), r
        assert r[0] != os.getpid() and r[1] == b"before fork" and r[2] == [b"a", b"b"]
    assert keyring.decrypt(scope, "c", ct, context="r") == b"before fork"


def test_stats_count_cache_use(keyring: coffer.Keyring, scope: str) -> None:
    before = keyring.stats()
    keyring.encrypt(scope, "c", b"x")
    after = keyring.stats()
    assert set(after) >= {"l1_hits", "l1_misses", "kek_unwraps"}
    assert after["l1_hits"] + after["l1_misses"] >= before["l1_hits"] + before["l1_misses"]


def test_postgres_key_store(pg_store: Store) -> None:
    k = pg_store.keyring()
    s = unique_scope()
    assert k.ensure_scope(s) == 1
    ct = k.encrypt(s, "c", "on postgres", context="r", type="text")
    assert k.decrypt(s, "c", ct, context="r", type="text") == "on postgres"


def test_column_handle_follows_rotation_and_destruction(keyring: coffer.Keyring) -> None:
    s = unique_scope()
    keyring.create_scope(s)
    col = keyring.column(s, "patients.ssn", type="text")
    a = col.encrypt("123-45-6789", context="r1")
    assert keyring.decrypt(s, "patients.ssn", a, context="r1", type="text") == "123-45-6789"
    assert col.decrypt(a, context="r1") == "123-45-6789"
    with pytest.raises(coffer.DecryptionError):
        col.decrypt(a, context="r2")
    many = [col.encrypt(f"v{i}", context=str(i)) for i in range(2100)]  # crosses two leases
    assert col.decrypt_batch(many, contexts=[str(i) for i in range(2100)])[2099] == "v2099"
    keyring.rotate(s)
    b = col.encrypt("after rotation", context="r1")
    assert b[:2] != a[:2]  # sealed under version 2 at once (the handle saw the rotation)
    assert col.decrypt(b, context="r1") == "after rotation"
    keyring.destroy(s)
    with pytest.raises(coffer.KeyDestroyed):
        col.encrypt("no", context="r1")
    with pytest.raises(coffer.KeyDestroyed):
        col.decrypt(a, context="r1")
    assert "123" not in repr(col)


def test_table_seal_rows_matches_seal_row(keyring: coffer.Keyring) -> None:
    import json

    s = unique_scope()
    keyring.create_scope(s)
    spec = {
        "name": "t", "scope": s,
        "column": [{"name": "ssn", "type": "text"}, {"name": "email", "type": "text", "nulls": "authenticated"}],
        "index": [{"name": "ssn_bidx", "columns": ["ssn"], "bits": 32, "normalize": ["digits"]},
                  {"name": "email_prefix", "columns": ["email"], "bits": 16, "prefix": [3, 5]}],
    }
    t = coffer.Table(keyring, json.dumps(spec))
    rows = [(str(i), [("ssn", f"123-45-{i:04d}".encode()), ("email", None if i % 3 == 0 else f"u{i}@x.org".encode())])
            for i in range(50)]
    many = t.seal_rows(rows)
    for (row, vals), (cts, ixs, ver, row_key) in zip(rows, many):
        one_cts, one_ixs, one_ver, one_key = t.seal_row(row, vals)
        assert ixs == one_ixs and ver == one_ver == 1
        assert row_key is None and one_key is None  # no per-row keys on this table
        for col, v in vals:
            assert t.open(col, row, cts[col]) == v == t.open(col, row, one_cts[col])
        with pytest.raises(coffer.DecryptionError):
            t.open("ssn", str(int(row) + 1), cts["ssn"])
    assert many[0][1]["email_prefix"] is None and len(many[1][1]["email_prefix"]) == 3
    with pytest.raises(coffer.ConfigError):
        t.seal_rows([("1", [("nope", b"x")])])


def test_table_scope_templates_and_row_keys(keyring: coffer.Keyring) -> None:
    """The binding under the integrations: a scope per placeholder value set, searches merged
    across the scopes named, row keys returned on seal and needed on open."""
    import json

    tag = unique_scope("t").split(":")[1]
    spec = {
        "name": "visits", "scope": f"tenant:{{tenant_id}}/v{tag}", "keys": "row",
        "column": [{"name": "dx", "type": "text"}],
        "index": [{"name": "dx_bidx", "columns": ["dx"], "bits": 32}],
    }
    t = coffer.Table(keyring, json.dumps(spec))
    assert t.placeholders == ["tenant_id"] and t.row_key_column == "row_key"
    with pytest.raises(coffer.ConfigError, match=r"pass scope=\{'tenant_id': …\}"):
        t.seal_row("1", [("dx", b"E11")])
    with pytest.raises(coffer.ConfigError, match="one scope"):
        t.seal_row("1", [("dx", b"E11")], scope=[{"tenant_id": "a"}, {"tenant_id": "b"}])
    with pytest.raises(TypeError, match="must be a str"):
        t.seal_row("1", [("dx", b"E11")], scope={"tenant_id": 7})
    with pytest.raises(coffer.ConfigError, match="not a placeholder"):
        t.seal_row("1", [("dx", b"E11")], scope={"tenant_id": "a", "other": "b"})
    a, b = {"tenant_id": "a"}, {"tenant_id": "b"}
    cts_a, ix_a, _, key_a = t.seal_row("1", [("dx", b"E11")], scope=a)
    cts_b, ix_b, _, key_b = t.seal_row("2", [("dx", b"E11")], scope=b)
    assert key_a and key_b and key_a != key_b and ix_a["dx_bidx"] != ix_b["dx_bidx"]
    assert t.open("dx", "1", cts_a["dx"], scope=a, row_key=key_a) == b"E11"
    with pytest.raises(coffer.KeyDestroyed, match="row key was erased"):
        t.open("dx", "1", cts_a["dx"], scope=a, row_key=None)
    with pytest.raises(coffer.CofferError):  # a's row key does not unwrap under b's scope
        t.open("dx", "1", cts_a["dx"], scope=b, row_key=key_a)
    # An update with the stored key keeps it; seal_rows takes one key per row.
    _, _, _, again = t.seal_row("1", [("dx", b"I10")], scope=a, row_key=key_a)
    assert again == key_a
    many = t.seal_rows([("3", [("dx", b"J45")]), ("1", [("dx", b"Z00")])], scope=a, row_keys=[None, key_a])
    assert many[0][3] not in (None, key_a) and many[1][3] == key_a
    with pytest.raises(coffer.ConfigError, match="1 keys for 2 rows"):
        t.seal_rows([("3", [("dx", b"J45")]), ("4", [("dx", b"J45")])], scope=a, row_keys=[None])
    # One search per scope named, merged: each tenant's term is in it.
    one = t.search_eq("dx_bidx", [b"E11"], scope=a).terms
    both = t.search_eq("dx_bidx", [b"E11"], scope=[a, b]).terms
    assert ix_a["dx_bidx"] in one and ix_b["dx_bidx"] not in one
    assert ix_a["dx_bidx"] in both and ix_b["dx_bidx"] in both
    with pytest.raises(coffer.ConfigError, match="empty list"):
        t.search_eq("dx_bidx", [b"E11"], scope=[])
    # A fixed-scope table refuses row keys it does not have.
    fixed = coffer.Table(keyring, json.dumps({"name": "f", "scope": unique_scope(), "column": [{"name": "x", "type": "text"}]}))
    assert fixed.placeholders == [] and fixed.row_key_column is None
    with pytest.raises(coffer.ConfigError, match="no per-row keys"):
        fixed.open("x", "1", b"\x00" * 40, row_key=b"k")
