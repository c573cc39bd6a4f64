#!/usr/bin/env python3
"""Decrypt a Coffer backup with the official AWS Encryption SDK for Python: no Coffer binary.

    dr_decrypt.py BACKUP_DIR --key-file PATH [--key-name NAME] > app.dump      (custom format)
    dr_decrypt.py BACKUP_DIR --key-env VAR   [--key-name NAME] -o app.dumpdir  (directory format)

BACKUP_DIR is DIR/<backup-id> as `coffer backup` wrote it. The key is the KEK, standard base64 of
32 bytes as `coffer keygen` prints it, read from a file or an environment variable (never from the
command line). --key-name is the name the backup was made under: default/v1 for --kek and
recovery/v1 for --recovery-kek unless `coffer backup` was told otherwise (`coffer file inspect
BACKUP_DIR/manifest.cfr`, or any hex dump of its first bytes, shows it).

What it checks, before writing anything: the manifest decrypts and authenticates, its encryption
context names it as the manifest of this backup, its parts are numbered 1..n and add up to the
total, the directory holds exactly those part files, and each one has the listed length and
SHA-256. Then each part is decrypted in order, its authenticated encryption context checked
(backup id, position, file) and its plaintext length compared with the manifest; the plaintext
goes to stdout (custom format: pipe it into pg_restore or a file) or into a new directory
(directory format: `pg_restore -j N -d DB DIR`). Exit status 0 on success, 1 on any failure, in
which case the output must not be used.

Requires: pip install 'aws-encryption-sdk[MPL]'  (aws-encryption-sdk 4.x with
aws-cryptographic-material-providers). docs/OPERATIONS.md explains when to use it.
"""
import argparse
import base64
import hashlib
import json
import logging
import os
import sys

import aws_encryption_sdk
from aws_cryptographic_material_providers.mpl import AwsCryptographicMaterialProviders
from aws_cryptographic_material_providers.mpl.config import MaterialProvidersConfig
from aws_cryptographic_material_providers.mpl.models import AesWrappingAlg, CreateRawAesKeyringInput
from aws_encryption_sdk.identifiers import Algorithm, CommitmentPolicy

NAMESPACE = "coffer"  # the raw AES key namespace (provider id) Coffer writes
MANIFEST = "manifest.cfr"
CHUNK = 1 << 20


class Refused(Exception):
    """The backup does not check out; the message says why."""


def load_key(args):
    if args.key_file:
        with open(args.key_file, "rb") as f:
            text = f.read()
    else:
        text = os.environb.get(args.key_env.encode(), b"")
        if not text:
            raise Refused(f"environment variable {args.key_env} is empty or not set")
    key = base64.b64decode(text.strip(), validate=True)
    if len(key) != 32:
        raise Refused("the key must be 32 bytes (standard base64, as `coffer keygen` prints)")
    return key


def keyring_for(key, name):
    mpl = AwsCryptographicMaterialProviders(config=MaterialProvidersConfig())
    return mpl.create_raw_aes_keyring(
        input=CreateRawAesKeyringInput(
            key_namespace=NAMESPACE,
            key_name=name,
            wrapping_key=key,
            wrapping_alg=AesWrappingAlg.ALG_AES256_GCM_IV12_TAG16,
        )
    )


def part_name(index):
    return f"part-{index:06d}.cfr"


def check_manifest(m, context):
    if m.get("coffer_backup") != 1:
        raise Refused("not a version-1 Coffer backup manifest")
    if m.get("format") not in ("custom", "directory"):
        raise Refused(f"unknown backup format {m.get('format')!r}")
    expected = {
        "coffer:backup-id": m["backup_id"],
        "coffer:kind": "manifest",
        "coffer:format": m["format"],
        "coffer:parts": str(len(m["parts"])),
        "coffer:total-length": str(m["total_plaintext_bytes"]),
    }
    if dict(context) != expected:
        raise Refused("the manifest's encryption context does not match its contents")
    if not m["parts"]:
        raise Refused("the manifest lists no parts")
    total = 0
    for position, p in enumerate(m["parts"], start=1):
        if p["index"] != position or p["name"] != part_name(position):
            raise Refused(f"the manifest lists {p['name']} in position {position}")
        f = p.get("file")
        if (m["format"] == "directory") != (f is not None):
            raise Refused(f"{p['name']}: file name missing or unexpected")
        if f is not None and (f.startswith(".") or "/" in f or "\\" in f or not f):
            raise Refused(f"{p['name']}: unsafe file name {f!r}")
        total += p["plaintext_bytes"]
    if total != m["total_plaintext_bytes"]:
        raise Refused("the parts' lengths do not add up to the manifest's total")


def check_files(backup, m):
    listed = {p["name"] for p in m["parts"]}
    for name in os.listdir(backup):
        if name.endswith(".cfr") and name != MANIFEST and name not in listed:
            raise Refused(f"{name} is in the backup directory but not in its manifest")
    for p in m["parts"]:
        path = os.path.join(backup, p["name"])
        if not os.path.isfile(path):
            raise Refused(f"{p['name']} is missing")
        if os.path.getsize(path) != p["ciphertext_bytes"]:
            raise Refused(f"{p['name']} does not have the length the manifest lists")
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(CHUNK), b""):
                h.update(block)
        if h.hexdigest() != p["sha256"]:
            raise Refused(f"{p['name']} does not match the SHA-256 the manifest lists")


def check_part_context(m, p, context):
    expected = {
        "coffer:backup-id": m["backup_id"],
        "coffer:kind": "part",
        "coffer:format": m["format"],
        "coffer:part": str(p["index"]),
    }
    if p.get("file") is not None:
        expected["coffer:file"] = p["file"]
    if dict(context) != expected:
        raise Refused(f"{p['name']}'s encryption context does not match the manifest")


def decrypt_part(client, keyring, backup, m, p, out):
    written = 0
    checked = False
    with open(os.path.join(backup, p["name"]), "rb") as f:
        with client.stream(mode="d", source=f, keyring=keyring) as dec:
            while True:
                chunk = dec.read(CHUNK)
                if not checked:
                    # The header (read with the first frame) is authenticated by now.
                    if dec.header.algorithm != Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY:
                        raise Refused(f"{p['name']}: unexpected algorithm suite")
                    check_part_context(m, p, dec.header.encryption_context)
                    checked = True
                if not chunk:
                    break
                out.write(chunk)
                written += len(chunk)
    if written != p["plaintext_bytes"]:
        raise Refused(f"{p['name']} holds {written} bytes, the manifest says {p['plaintext_bytes']}")


def main():
    ap = argparse.ArgumentParser(description="Decrypt a Coffer backup with the AWS Encryption SDK.")
    ap.add_argument("backup", help="the backup directory, DIR/<backup-id>")
    key = ap.add_mutually_exclusive_group(required=True)
    key.add_argument("--key-file", help="a file holding the base64 KEK")
    key.add_argument("--key-env", help="an environment variable holding the base64 KEK")
    ap.add_argument("--key-name", default="default/v1", help="the key's name in the backup")
    ap.add_argument("-o", "--output", help="a new directory (directory-format backups)")
    args = ap.parse_args()
    # The SDK logs a traceback of its own on top of the exception it raises; one message is enough.
    logging.getLogger("aws_encryption_sdk").setLevel(logging.CRITICAL + 1)

    keyring = keyring_for(load_key(args), args.key_name)
    client = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT,
        max_encrypted_data_keys=16,
    )
    with open(os.path.join(args.backup, MANIFEST), "rb") as f:
        text, header = client.decrypt(source=f.read(), keyring=keyring)
    if header.algorithm != Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY:
        raise Refused("the manifest uses an unexpected algorithm suite")
    m = json.loads(text)
    check_manifest(m, header.encryption_context)
    check_files(args.backup, m)
    print(f"dr_decrypt: backup {m['backup_id']} ({m['format']}), {len(m['parts'])} parts, "
          f"{m['total_plaintext_bytes']} bytes: manifest and part hashes check out", file=sys.stderr)

    if m["format"] == "custom":
        if args.output:
            raise Refused("a custom-format backup is written to stdout; redirect it")
        out = sys.stdout.buffer
        for p in m["parts"]:
            decrypt_part(client, keyring, args.backup, m, p, out)
        out.flush()
    else:
        if not args.output:
            raise Refused("a directory-format backup needs -o NEW_DIRECTORY")
        os.mkdir(args.output, 0o700)
        current, out = None, None
        for p in m["parts"]:
            if p["file"] != current:
                if out:
                    out.close()
                current = p["file"]
                out = open(os.path.join(args.output, current), "xb")
            decrypt_part(client, keyring, args.backup, m, p, out)
        if out:
            out.close()


if __name__ == "__main__":
    try:
        main()
    except Refused as e:
        print(f"dr_decrypt: refused: {e}", file=sys.stderr)
        sys.exit(1)
    except Exception as e:  # the SDK's own errors: wrong key, tampering, truncation
        print(f"dr_decrypt: failed: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
