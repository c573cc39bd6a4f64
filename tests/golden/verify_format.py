"""Checks tests/data/golden/coffer-v1.json against docs/FORMAT.md, written from the document alone
with Python's `cryptography` (an implementation independent of AWS-LC and RustCrypto).

Run: python3 tests/golden/verify_format.py   (make test runs it)
"""
import hashlib
import hmac
import json
import pathlib
import struct
import sys
import unicodedata

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_unwrap_with_padding, aes_key_wrap_with_padding
import base64

ROOT = pathlib.Path(__file__).resolve().parents[2]
G = json.loads((ROOT / "tests/data/golden/coffer-v1.json").read_text())

# §1, table 1
FORMAT, HEADER, SCOPE, COLUMN, VALUE_TYPE, DOMAIN, ROW = 1, 2, 3, 4, 5, 6, 7
PURPOSE, INDEX, VALUE = 0x10, 0x11, 0x20
STORE, VERSION, KEY_ID, ALGORITHM = 0x30, 0x31, 0x32, 0x33
TYPES = {"bytes": 0, "text": 1, "int64": 2}
SUITES = {"aes-256-gcm-t96": (0, 12), "aes-256-gcm-t128": (1, 16), "aes-256-siv": (2, None)}


def C(tag, data):
    if isinstance(data, str):
        data = data.encode()
    return bytes([tag]) + struct.pack(">I", len(data)) + data


def subkey(dek, label, comps, length):
    info = b"coffer/v1/" + C(PURPOSE, label) + b"".join(C(t, v) for t, v in comps)
    return info, HKDF(hashes.SHA256(), length, b"\0" * 32, info).derive(dek)


def header(null, suite, version):  # §2.1
    if version < 31:
        return bytes([null << 7 | suite << 5 | version])
    out, v = bytearray([null << 7 | suite << 5 | 31]), version
    while True:
        b, v = v & 0x7F, v >> 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def normalize(name, v):  # §5
    if name == "trim":
        return v.strip()
    if name == "casefold":
        return v.lower()
    if name == "nfc":
        return unicodedata.normalize("NFC", v)
    if name == "digits":
        return "".join(c for c in v if c in "0123456789")
    if name.startswith("last:"):
        n = int(name[5:])
        return v[-n:] if n < len(v) else v
    raise ValueError(name)


dek = bytes.fromhex(G["dek"])
kek = bytes.fromhex(G["kek"])
checked = 0

for sk in G["subkeys"]:
    info, key = subkey(dek, sk["purpose"], [(t, v) for t, v in sk["components"]], sk["length"])
    assert info.hex() == sk["info"], sk["purpose"]
    assert key.hex() == sk["subkey"], sk["purpose"]
    checked += 1

for f in G["fields"]:
    suite, tag_len = SUITES[f["suite"]]
    ct = bytes.fromhex(f["ciphertext"])
    h = header(int(f["null"]), suite, f["version"])
    assert ct.startswith(h), f
    assert "cf1:" + base64.urlsafe_b64encode(ct).decode().rstrip("=") == f["text"]
    comps = [C(FORMAT, "coffer/field/v1"), C(HEADER, h), C(SCOPE, f["scope"]), C(COLUMN, f["column"]),
             C(VALUE_TYPE, bytes([TYPES[f["type"]]]))] + [C(DOMAIN, d) for d in f["domain"]]
    body = ct[len(h):]
    if tag_len:  # GCM: CT ‖ TAG ‖ IV, AAD = concatenated components (+ ROW)
        _, key = subkey(dek, "aead", [(COLUMN, f["column"])], 32)
        aad = b"".join(comps) + b"".join(C(ROW, r) for r in f["row"])
        iv, tag, c = body[-12:], body[-12 - tag_len:-12], body[:-12 - tag_len]
        dec = Cipher(algorithms.AES(key), modes.GCM(iv, tag, min_tag_length=tag_len)).decryptor()
        dec.authenticate_additional_data(aad)
        pt = dec.update(c) + dec.finalize()
    else:  # AES-SIV: S2V vector = encoded components
        assert not f["row"]
        _, key = subkey(dek, "siv", [(COLUMN, f["column"])], 64)
        pt = AESSIV(key).decrypt(body, comps)
        assert AESSIV(key).encrypt(pt, comps) == body
    assert pt == bytes.fromhex(f["plaintext"]), f
    assert not (f["null"] and pt)
    checked += 1

for b in G["blind_indexes"]:
    _, key = subkey(dek, "bidx", [(COLUMN, b["column"]), (INDEX, b["name"])], 32)
    data = b"".join(C(DOMAIN, d) for d in b["domain"])
    for v in b["values"]:
        for n in b["normalizers"]:
            v = normalize(n, v)
        data += C(VALUE, v)
    mac = hmac.new(key, data, hashlib.sha256).digest()
    nbytes, bits = (b["bits"] + 7) // 8, b["bits"]
    out = bytearray(mac[:nbytes])
    out[-1] &= (0xFF << (nbytes * 8 - bits)) & 0xFF
    assert out.hex() == b["index"], b
    checked += 1

assert aes_key_wrap_with_padding(kek, dek).hex() == G["wrap"]["aes256-kwp"]
assert aes_key_unwrap_with_padding(kek, bytes.fromhex(G["wrap"]["aes256-kwp"])) == dek
assert aes_key_unwrap(kek, bytes.fromhex(G["wrap"]["aes256-kw"])) == dek
checked += 2

m = G["metadata_tag"]
_, mk = subkey(dek, "meta", [], 32)
data = (C(STORE, m["store_id"]) + C(SCOPE, m["scope"]) + C(VERSION, struct.pack(">I", m["version"]))
        + C(KEY_ID, bytes.fromhex(m["key_id"])) + C(ALGORITHM, m["algorithm"]))
assert hmac.new(mk, data, hashlib.sha256).hexdigest() == m["tag"]
checked += 1

assert checked == 24, checked
print(f"verify_format.py: {checked} golden vectors match docs/FORMAT.md (Python cryptography)")

# §9: data keys kept in rows (tests/data/golden/coffer-keys-v1.json)
K = json.loads((ROOT / "tests/data/golden/coffer-keys-v1.json").read_text())
parent, store = bytes.fromhex(K["parent_dek"]), bytes.fromhex(K["store_id"])
blobs = 0
for case in K["data_keys"]:
    blob, key_id = bytes.fromhex(case["blob"]), bytes.fromhex(case["key_id"])
    data_key, version = bytes.fromhex(case["data_key"]), case["parent_version"]
    assert len(blob) == 93 and blob[0] == 1
    assert blob[1:5] == struct.pack(">I", version) and blob[5:21] == key_id
    _, wk = subkey(parent, "data-key", [(KEY_ID, key_id)], 32)
    assert aes_key_wrap_with_padding(wk, data_key) == blob[21:61]
    assert aes_key_unwrap_with_padding(wk, blob[21:61]) == data_key
    _, mk = subkey(data_key, "meta", [], 32)
    tagged = (C(STORE, store) + C(SCOPE, case["scope"]) + C(VERSION, struct.pack(">I", version))
              + C(KEY_ID, key_id) + C(ALGORITHM, "coffer-data-key-v1"))
    assert hmac.new(mk, tagged, hashlib.sha256).digest() == blob[61:]
    blobs += 1
assert blobs == 3, blobs
print(f"verify_format.py: {blobs} data-key blobs match docs/FORMAT.md §9")
