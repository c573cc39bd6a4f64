"""Decrypts tests/data/golden/stream-v1.json from docs/FORMAT.md §10 alone, with Python's
`cryptography` (no AWS Encryption SDK, no AWS-LC): header parse, raw AES EDK unwrap, key
derivation, key commitment, header tag, every frame and the final frame.

Run: python3 tests/golden/verify_stream.py   (make test runs it)
"""
import json
import pathlib
import struct
import sys

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ROOT = pathlib.Path(__file__).resolve().parents[2]
G = json.loads((ROOT / "tests/data/golden/stream-v1.json").read_text())
KEYS = {"3f9a0c1d/main/v1": bytes.fromhex(G["primary_key"]),
        "recovery/v1": bytes.fromhex(G["recovery_key"])}


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, n):
        if self.pos + n > len(self.data):
            raise ValueError("truncated")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u16(self):
        return struct.unpack(">H", self.take(2))[0]

    def u32(self):
        return struct.unpack(">I", self.take(4))[0]


def hkdf(ikm, salt, info):
    return HKDF(algorithm=hashes.SHA512(), length=32, salt=salt, info=info).derive(ikm)


def decrypt(message, key_name):
    r = Reader(message)
    assert r.take(1) == b"\x02" and r.take(2) == b"\x04\x78", "version 2, suite 0x0478"
    message_id = r.take(32)
    context = r.take(r.u16())
    edks = []
    for _ in range(r.u16()):
        edks.append((r.take(r.u16()), r.take(r.u16()), r.take(r.u16())))
    assert r.take(1) == b"\x02", "framed"
    frame_len = r.u32()
    commitment = r.take(32)
    body = message[:r.pos]
    header_tag = r.take(16)
    data_key = None
    for provider, info, edk in edks:
        name, rest = info[:-20], info[-20:]
        if provider == b"coffer" and name.decode() == key_name:
            assert struct.unpack(">II", rest[:8]) == (128, 12)
            data_key = AESGCM(KEYS[key_name]).decrypt(rest[8:], edk, context)
    assert data_key is not None, f"no EDK for {key_name}"
    assert hkdf(data_key, message_id, b"COMMITKEY") == commitment, "key commitment"
    k = AESGCM(hkdf(data_key, message_id, b"\x04\x78DERIVEKEY"))
    k.decrypt(b"\x00" * 12, header_tag, body)  # raises unless the tag matches
    out, seq = b"", 1
    while True:
        word = r.u32()
        last = word == 0xFFFFFFFF
        if last:
            word = r.u32()
        assert word == seq, "sequence number"
        iv = r.take(12)
        assert iv == b"\x00" * 8 + struct.pack(">I", seq), "frame IV"
        n = r.u32() if last else frame_len
        ct = r.take(n + 16)
        label = b"AWSKMSEncryptionClient Final Frame" if last else b"AWSKMSEncryptionClient Frame"
        aad = message_id + label + struct.pack(">IQ", seq, n)
        out += k.decrypt(iv, ct, aad)
        seq += 1
        if last:
            break
    assert r.pos == len(message), "bytes after the final frame"
    return out, frame_len


def main():
    checked = 0
    for i, case in enumerate(G["cases"]):
        message = bytes.fromhex(case["message"])
        n = case["plaintext_len"]
        expected = bytes((j * 13 + 7) % 256 for j in range(n))
        names = ["3f9a0c1d/main/v1"] + (["recovery/v1"] if case["edks"] == 2 else [])
        for name in names:
            out, frame_len = decrypt(message, name)
            assert frame_len == case["frame_len"], f"case {i}: frame length"
            assert out == expected, f"case {i}: plaintext with {name}"
            checked += 1
    assert checked == 10, checked
    print(f"verify_stream: {len(G['cases'])} golden messages, {checked} decryptions match FORMAT.md §10")


if __name__ == "__main__":
    sys.exit(main())
