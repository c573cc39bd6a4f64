"""The official AWS Encryption SDK for Python with an AWS KMS keyring (MPL), against moto.

    python3 esdk_kms.py encrypt ENDPOINT KEY_ARN [k=v ...] < plaintext > message
    python3 esdk_kms.py decrypt ENDPOINT KEY_ARN            < message > plaintext

Credentials are moto's dummy ones; region us-east-1. Suite 0x0478, commitment required.
"""
import sys

import aws_encryption_sdk
import boto3
from aws_cryptographic_material_providers.mpl import AwsCryptographicMaterialProviders
from aws_cryptographic_material_providers.mpl.config import MaterialProvidersConfig
from aws_cryptographic_material_providers.mpl.models import CreateAwsKmsKeyringInput
from aws_encryption_sdk.identifiers import Algorithm, CommitmentPolicy


def main():
    op, endpoint, arn = sys.argv[1:4]
    kms = boto3.client("kms", endpoint_url=endpoint, region_name="us-east-1",
                       aws_access_key_id="test", aws_secret_access_key="test")
    mpl = AwsCryptographicMaterialProviders(config=MaterialProvidersConfig())
    keyring = mpl.create_aws_kms_keyring(
        input=CreateAwsKmsKeyringInput(kms_key_id=arn, kms_client=kms))
    client = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
    data = sys.stdin.buffer.read()
    if op == "encrypt":
        context = dict(kv.split("=", 1) for kv in sys.argv[4:])
        out, _ = client.encrypt(source=data, keyring=keyring, encryption_context=context,
                                algorithm=Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY)
    elif op == "decrypt":
        out, _ = client.decrypt(source=data, keyring=keyring)
    else:
        raise SystemExit(f"unknown operation {op}")
    sys.stdout.buffer.write(out)


if __name__ == "__main__":
    main()
