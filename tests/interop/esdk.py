"""The official AWS Encryption SDK for Python on one side of Coffer's interop tests.

    python3 esdk.py encrypt KEY_HEX NAMESPACE NAME FRAME_LEN [k=v ...] < plaintext > message
    python3 esdk.py decrypt KEY_HEX NAMESPACE NAME            < message > plaintext

A raw AES-256 wrapping key (AES-GCM, IV 12, tag 16: the raw AES keyring's layout), suite 0x0478
(AES_256_GCM_HKDF_SHA512_COMMIT_KEY), commitment required on encrypt and decrypt.
"""
import sys

import aws_encryption_sdk
from aws_encryption_sdk.identifiers import (Algorithm, CommitmentPolicy, EncryptionKeyType,
                                            WrappingAlgorithm)
from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey
from aws_encryption_sdk.key_providers.raw import RawMasterKey


def main():
    op, key_hex, namespace, name = sys.argv[1:5]
    key = RawMasterKey(
        provider_id=namespace,
        key_id=name.encode(),
        wrapping_key=WrappingKey(
            wrapping_algorithm=WrappingAlgorithm.AES_256_GCM_IV12_TAG16_NO_PADDING,
            wrapping_key=bytes.fromhex(key_hex),
            wrapping_key_type=EncryptionKeyType.SYMMETRIC,
        ),
    )
    client = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
    data = sys.stdin.buffer.read()
    if op == "encrypt":
        frame = int(sys.argv[5])
        context = dict(kv.split("=", 1) for kv in sys.argv[6:])
        out, _ = client.encrypt(source=data, key_provider=key, frame_length=frame,
                                algorithm=Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY,
                                encryption_context=context)
    elif op == "decrypt":
        out, header = client.decrypt(source=data, key_provider=key)
        assert header.algorithm == Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY
    else:
        raise SystemExit(f"unknown operation {op}")
    sys.stdout.buffer.write(out)


if __name__ == "__main__":
    main()
