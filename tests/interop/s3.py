"""A plain S3 client (boto3, no Coffer code) on the other side of Coffer's S3 tests.

    python3 s3.py ENDPOINT create-bucket BUCKET
    python3 s3.py ENDPOINT get BUCKET KEY  > object bytes
    python3 s3.py ENDPOINT put BUCKET KEY  < object bytes
    python3 s3.py ENDPOINT head BUCKET KEY   (JSON: ContentType, Metadata, ContentLength)
    python3 s3.py ENDPOINT list BUCKET       (one key a line)

Dummy credentials and us-east-1: ENDPOINT is a local moto server.
"""
import json
import sys

import boto3


def main():
    endpoint, op, bucket = sys.argv[1:4]
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="test", aws_secret_access_key="test")
    if op == "create-bucket":
        s3.create_bucket(Bucket=bucket)
    elif op == "get":
        sys.stdout.buffer.write(s3.get_object(Bucket=bucket, Key=sys.argv[4])["Body"].read())
    elif op == "put":
        s3.put_object(Bucket=bucket, Key=sys.argv[4], Body=sys.stdin.buffer.read())
    elif op == "head":
        h = s3.head_object(Bucket=bucket, Key=sys.argv[4])
        print(json.dumps({k: h[k] for k in ("ContentType", "Metadata", "ContentLength")}))
    elif op == "list":
        for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            print(o["Key"])
    else:
        raise SystemExit(f"unknown operation {op}")


if __name__ == "__main__":
    main()
