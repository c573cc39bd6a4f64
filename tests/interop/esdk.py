"""The official AWS Encryption SDK for Python on one side of Coffer's interop tests.

    python3 esdk.py encrypt KEY_HEX NAMESPACE NAME FRAME_LEN [k=v ...] < plaintext > message
    python3 esdk.py decrypt KEY_HEX NAMESPACE NAME            < message > plaintext

The wrapping key is the Material Providers Library's RawAESKeyring (`aws-encryption-sdk[MPL]`):
AES-256-GCM, IV 12, tag 16. With COFFER_ESDK_LEGACY=1 the SDK's older RawMasterKey is used
instead (same bytes on the wire). Suite 0x0478 (AES_256_GCM_HKDF_SHA512_COMMIT_KEY), key
commitment required on encrypt and decrypt. On decrypt the encryption context is printed to
stderr as `context k=v` lines.

Messages Coffer must recognise and refuse are written with COFFER_ESDK_SUITE=signed (v2, suite
0x0578, ECDSA P-384) or COFFER_ESDK_SUITE=v1 (format v1, suite 0x0178, no key commitment); a
FRAME_LEN of 0 writes non-framed content.
"""
import os
import sys

import aws_encryption_sdk
from aws_encryption_sdk.identifiers import Algorithm, CommitmentPolicy


def mpl_keyring(key, namespace, name):
    from aws_cryptographic_material_providers.mpl import AwsCryptographicMaterialProviders
    from aws_cryptographic_material_providers.mpl.config import MaterialProvidersConfig
    from aws_cryptographic_material_providers.mpl.models import (AesWrappingAlg,
                                                                  CreateRawAesKeyringInput)
    mpl = AwsCryptographicMaterialProviders(config=MaterialProvidersConfig())
    return mpl.create_raw_aes_keyring(input=CreateRawAesKeyringInput(
        key_namespace=namespace, key_name=name, wrapping_key=key,
        wrapping_alg=AesWrappingAlg.ALG_AES256_GCM_IV12_TAG16))


def legacy_master_key(key, namespace, name):
    from aws_encryption_sdk.identifiers import EncryptionKeyType, WrappingAlgorithm
    from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey
    from aws_encryption_sdk.key_providers.raw import RawMasterKey
    return RawMasterKey(
        provider_id=namespace,
        key_id=name.encode(),
        wrapping_key=WrappingKey(
            wrapping_algorithm=WrappingAlgorithm.AES_256_GCM_IV12_TAG16_NO_PADDING,
            wrapping_key=key,
            wrapping_key_type=EncryptionKeyType.SYMMETRIC,
        ),
    )


def main():
    op, key_hex, namespace, name = sys.argv[1:5]
    key = bytes.fromhex(key_hex)
    if os.environ.get("COFFER_ESDK_LEGACY") == "1":
        keys = {"key_provider": legacy_master_key(key, namespace, name)}
    else:
        keys = {"keyring": mpl_keyring(key, namespace, name)}
    suite = os.environ.get("COFFER_ESDK_SUITE", "")
    algorithm = {
        "": Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY,
        "signed": Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384,
        "v1": Algorithm.AES_256_GCM_IV12_TAG16_HKDF_SHA256,
    }[suite]
    policy = (CommitmentPolicy.FORBID_ENCRYPT_ALLOW_DECRYPT if suite == "v1"
              else CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
    client = aws_encryption_sdk.EncryptionSDKClient(commitment_policy=policy)
    data = sys.stdin.buffer.read()
    if op == "encrypt":
        frame = int(sys.argv[5])
        context = dict(kv.split("=", 1) for kv in sys.argv[6:])
        out, _ = client.encrypt(source=data, frame_length=frame, algorithm=algorithm,
                                encryption_context=context, **keys)
    elif op == "decrypt":
        out, header = client.decrypt(source=data, **keys)
        assert header.algorithm == Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY
        for k, v in sorted(header.encryption_context.items()):
            print(f"context {k}={v}", file=sys.stderr)
    else:
        raise SystemExit(f"unknown operation {op}")
    sys.stdout.buffer.write(out)


if __name__ == "__main__":
    main()
