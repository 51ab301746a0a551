"""S3 (or an S3-compatible store): whole-object uploads and presigned GET URLs, with boto3, and the
environment Beam's `s3://` filesystem reads its credentials and endpoint from. Nothing here knows about
reports."""
from __future__ import annotations

import functools
import os
import re
from collections.abc import MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionError, EndpointConnectionError

__all__ = ["BucketMissing", "Refused", "S3Account", "Unavailable", "parse_path"]

_PATH = re.compile(r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(.+)")
Unavailable = (EndpointConnectionError, ConnectionError)
_REFUSALS = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"}


class Refused(Exception):
    """The store refused our credentials."""


class BucketMissing(Exception):
    """The bucket does not exist."""


@functools.lru_cache(maxsize=8)
def _client(account: S3Account):
    # Path-style addressing: a compatible store on an address has no bucket host names. Few retries: the
    # caller's own waits (the store's outage limit) decide how long to try.
    return boto3.session.Session().client(
        "s3", aws_access_key_id=account.access_key, aws_secret_access_key=account.secret_key,
        endpoint_url=account.endpoint, region_name=account.region,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 2},
                      connect_timeout=10))


def parse_path(path: str) -> tuple[str, str]:
    """(bucket, key) of `s3://bucket/key`; ValueError for any other path."""
    if not (match := _PATH.fullmatch(path)):
        raise ValueError("an S3 path is s3://<bucket>/<key>")
    return match[1], match[2]


@dataclass(frozen=True)
class S3Account:
    """Credentials for an S3 API.

    Args:
      access_key: the access key id, from the environment: never a flag.
      secret_key: its secret, likewise.
      endpoint: the S3 API's URL for a compatible store (e.g. http://127.0.0.1:8333); default AWS's.
      region: the signing region.
    """
    access_key: str
    secret_key: str
    endpoint: str | None = None
    region: str = "us-east-1"

    def client(self):
        """This account's boto3 client, made once (making one takes about 0.1 s; a client is thread-safe)."""
        return _client(self)

    @contextmanager
    def _answers(self, bucket: str):
        """The service's refusals as Refused and BucketMissing (their text names no key)."""
        try:
            yield
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code"))
            if code in _REFUSALS:
                raise Refused("the S3 store refused our credentials") from None
            if code in ("NoSuchBucket", "404"):
                raise BucketMissing(f"the bucket {bucket} does not exist") from None
            raise

    def check_bucket(self, bucket: str) -> None:
        """Returns when `bucket` exists and our credentials open it; raises Refused, BucketMissing or one
        of Unavailable."""
        with self._answers(bucket):
            self.client().head_bucket(Bucket=bucket)

    def create_bucket(self, bucket: str) -> None:
        """Creates `bucket` (private) unless it exists."""
        try:
            self.client().create_bucket(Bucket=bucket)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    def upload(self, local: str, path: str) -> None:
        """Uploads the local file to `path` (s3://), replacing it. The object appears whole or not at all:
        a large one goes up in parts that only the completing request makes visible (an upload that
        fails is aborted)."""
        bucket, key = parse_path(path)
        with self._answers(bucket):
            self.client().upload_file(local, bucket, key, Config=TransferConfig(max_concurrency=2))

    def read_url(self, path: str, expires_in: timedelta) -> str:
        """A presigned GET of the object at `path` (s3://) that works until `expires_in` from now (no call to
        the store)."""
        bucket, key = parse_path(path)
        return self.client().generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key},
                                                    ExpiresIn=int(expires_in.total_seconds()))

    def export(self, environ: MutableMapping[str, str] = os.environ) -> None:
        """Hands Beam's s3 filesystem these credentials through the variables boto3 reads when its options
        name none (this process and the workers it starts)."""
        environ.update({"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                        "AWS_DEFAULT_REGION": self.region})
        if self.endpoint:
            environ["AWS_ENDPOINT_URL_S3"] = self.endpoint

    def display_data(self) -> dict:
        return {"endpoint": self.endpoint or "AWS", "region": self.region}
