"""Bytes exchanged with the `coffer` CLI: field values (raw key), blind indexes and files
(KEK reference and key-store scope), in both directions; file streams from Python."""

from __future__ import annotations

import base64
import io
import os
import secrets
from pathlib import Path

import pytest

import coffer
from coffer.files import DecryptingReader, EncryptingWriter, decrypt_file, encrypt_file
from conftest import Store, unique_scope


@pytest.fixture()
def raw_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("COFFER_PY_RAW", base64.b64encode(secrets.token_bytes(32)).decode())
    return "env:COFFER_PY_RAW"


def _cli(cli: Path, *args: str, input: bytes | None = None) -> str:
    import subprocess

    r = subprocess.run([str(cli), *args], capture_output=True, input=input, env=dict(os.environ))
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode().strip()


def test_field_values_cross_with_the_cli(cli: Path, raw_key: str) -> None:
    opts = ["--scope", "tenant:a", "--column", "patients.ssn", "--context", "42", "--type", "text"]
    k = coffer.FieldKey(raw_key, scope="tenant:a", column="patients.ssn")
    ct = k.encrypt("123-45-6789", context="42", type="text")
    out = _cli(cli, "field", "decrypt", "--key", raw_key, *opts, "--value", coffer.to_text(ct))
    assert out == "123-45-6789"
    text = _cli(cli, "field", "encrypt", "--key", raw_key, *opts, "--value", "987-65-4321")
    assert k.decrypt(coffer.from_text(text), context="42", type="text") == "987-65-4321"
    with pytest.raises(coffer.DecryptionError):
        k.decrypt(coffer.from_text(text), context="43", type="text")
    det = coffer.FieldKey(raw_key, column="mrn", mode="deterministic")
    a = det.encrypt(b"MRN-1", domain="t1")
    b = _cli(cli, "field", "encrypt", "--key", raw_key, "--column", "mrn", "--mode", "deterministic",
             "--domain", "t1", "--value", "MRN-1")
    assert coffer.to_text(a) == b  # deterministic: the same bytes on both sides


def test_files_cross_with_the_cli(cli: Path, raw_key: str, tmp_path: Path) -> None:
    data = secrets.token_bytes(200_000)
    (tmp_path / "a.bin").write_bytes(data)
    encrypt_file(tmp_path / "a.bin", tmp_path / "a.cfr", kek=raw_key, context={"purpose": "test"})
    _cli(cli, "file", "decrypt", "--kek", raw_key, str(tmp_path / "a.cfr"), "-o", str(tmp_path / "a.out"))
    assert (tmp_path / "a.out").read_bytes() == data
    _cli(cli, "file", "encrypt", "--kek", raw_key, str(tmp_path / "a.bin"), "-o", str(tmp_path / "b.cfr"))
    ctx = decrypt_file(tmp_path / "b.cfr", tmp_path / "b.out", kek=raw_key)
    assert (tmp_path / "b.out").read_bytes() == data and isinstance(ctx, dict)


def test_scope_files_cross_with_the_cli(cli: Path, sqlite_store: Store, keyring: coffer.Keyring, tmp_path: Path) -> None:
    scope = unique_scope("files")
    keyring.create_scope(scope)
    data = b"scan " * 10_000
    buf = io.BytesIO()
    with EncryptingWriter(buf, keyring=keyring, scope=scope, frame_size=4096) as w:
        for i in range(0, len(data), 777):
            w.write(data[i:i + 777])
    (tmp_path / "s.cfr").write_bytes(buf.getvalue())
    r = sqlite_store.run(cli, "file", "decrypt", "--scope", scope, "--config", str(sqlite_store.config),
                         str(tmp_path / "s.cfr"))
    assert r.stdout == data
    r = sqlite_store.run(cli, "file", "encrypt", "--scope", scope, "--config", str(sqlite_store.config),
                         "-o", str(tmp_path / "t.cfr"), input=data)
    with open(tmp_path / "t.cfr", "rb") as f, DecryptingReader(f, keyring=keyring, scope=scope) as rd:
        assert rd.read(10) == data[:10]
        assert rd.read() == data[10:]
        assert rd.read() == b""
    keyring.destroy(scope)
    with open(tmp_path / "t.cfr", "rb") as f:
        with pytest.raises(coffer.KeyDestroyed):
            DecryptingReader(f, keyring=keyring, scope=scope)


def test_streams_refuse_truncated_and_altered_messages(raw_key: str) -> None:
    buf = io.BytesIO()
    with EncryptingWriter(buf, kek=raw_key, frame_size=1024) as w:
        w.write(b"x" * 5000)
    msg = buf.getvalue()
    assert DecryptingReader(io.BytesIO(msg), kek=raw_key).read() == b"x" * 5000
    with pytest.raises(coffer.DecryptionError):
        DecryptingReader(io.BytesIO(msg[:-40]), kek=raw_key).read()
    bad = bytearray(msg)
    bad[len(msg) // 2] ^= 1
    with pytest.raises(coffer.DecryptionError):
        DecryptingReader(io.BytesIO(bytes(bad)), kek=raw_key).read()
    with pytest.raises(coffer.CofferError):
        DecryptingReader(io.BytesIO(msg), kek="env:COFFER_PY_NOT_SET").read()
    other = base64.b64encode(secrets.token_bytes(32)).decode()
    os.environ["COFFER_PY_OTHER"] = other
    with pytest.raises(coffer.DecryptionError):
        DecryptingReader(io.BytesIO(msg), kek="env:COFFER_PY_OTHER")
    with pytest.raises(coffer.ConfigError):
        EncryptingWriter(io.BytesIO(), kek=raw_key, context=[("coffer:x", "y")])
    with pytest.raises(coffer.ConfigError):
        EncryptingWriter(io.BytesIO())
    w = EncryptingWriter(io.BytesIO(), kek=raw_key)
    w.close()
    with pytest.raises(ValueError):
        w.write(b"late")
