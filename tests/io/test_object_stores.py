"""io/azure_blob and io/s3 against the stack's real servers (Azurite, SeaweedFS): a file too large for one
request goes up in blocks or parts and appears whole, with no part left over, and the errors
say which refusal it was."""
import os
import uuid

import pytest

from programusers.io import azure_blob, s3
from programusers.local import azurite, seaweedfs

pytestmark = pytest.mark.services
SIZE = 20 * 1024 * 1024  # over both SDKs' single-request limits (8 MB for boto3's multipart threshold)


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("upload") / "report.zip"
    path.write_bytes(os.urandom(SIZE))
    return path


def test_a_large_upload_to_azure_appears_whole(stack, big_file):
    account, container = azurite.DEVELOPMENT_ACCOUNT, f"io-{uuid.uuid4().hex[:12]}"
    account.create_container(container)
    try:
        account.upload(str(big_file), f"azfs://{account.name}/{container}/r/report.zip")
        blob = account.client().get_blob_client(container, "r/report.zip")
        assert blob.download_blob().readall() == big_file.read_bytes()
        with pytest.raises(azure_blob.ContainerMissing, match=f"the container {container}-gone does not exist"):
            account.upload(str(big_file), f"azfs://{account.name}/{container}-gone/r/report.zip")
        wrong = azure_blob.AzureBlobAccount(account.name, "d3Jvbmc=" * 8, azurite.ENDPOINT)
        with pytest.raises(azure_blob.Refused):
            wrong.check_container(container)
    finally:
        account.client().delete_container(container)


def test_a_large_upload_to_s3_appears_whole(stack, big_file):
    account, bucket = seaweedfs.DEVELOPMENT_ACCOUNT, f"io-{uuid.uuid4().hex[:12]}"
    account.create_bucket(bucket)
    client = account.client()
    try:
        account.upload(str(big_file), f"s3://{bucket}/r/report.zip")
        assert client.get_object(Bucket=bucket, Key="r/report.zip")["Body"].read() == big_file.read_bytes()
        # (SeaweedFS, unlike AWS, takes a PUT into a missing bucket: the bucket is checked before.)
        with pytest.raises(s3.BucketMissing, match=f"the bucket {bucket}-gone does not exist"):
            account.check_bucket(f"{bucket}-gone")
        with pytest.raises(s3.Refused):
            s3.S3Account(account.access_key, "not-the-secret", seaweedfs.ENDPOINT).check_bucket(bucket)
        # Nothing but the report, and no upload left unfinished.
        assert [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]] == ["r/report.zip"]
        assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    finally:
        for found in client.list_objects_v2(Bucket=bucket).get("Contents", []):
            client.delete_object(Bucket=bucket, Key=found["Key"])
        client.delete_bucket(Bucket=bucket)
