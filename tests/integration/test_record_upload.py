"""Bundles uploaded to real object-store APIs on loopback: S3 is `moto` in server mode (with Object
Lock), GCS is the `gcp-storage-emulator` server. Round trips, refusals, and credentials that stop
being accepted in the middle of a multipart upload (which then resumes from the parts stored)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.helpers.nats import free_port
from wiretide.common.recording import NS, UploadTarget
from wiretide.gateway.recording import bundle as bundles
from wiretide.gateway.recording import upload as up

T0 = 1_800_000_000 * NS


def make_bundle(tmp: Path, payload_bytes: int = 0) -> tuple[Path, list[dict[str, Any]]]:
    run = tmp / "run"
    (run / "packets").mkdir(parents=True)
    docs = [
        {"id": f"01UP{i:022d}", "timestamp": T0 + i, "path": f"/x/{i}", "dst": {"name": "api-1"}}
        for i in range(20)
    ]
    (run / bundles.ENTRIES).write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in docs))
    (run / bundles.IDENTITIES).write_bytes(b"")
    (run / "packets" / "node-a.pcapng").write_bytes(os.urandom(payload_bytes))  # incompressible bulk
    out = tmp / "rec-1.tar.gz"
    bundles.pack(run, out, {"name": "rec", "run": "rec-1"})
    return out, docs


def round_trips(tmp: Path, data: bytes, docs: list[dict[str, Any]]) -> None:
    got = tmp / "downloaded.tar.gz"
    got.write_bytes(data)
    assert list(bundles.open_bundle(got, tmp / "opened").entries()) == docs


# ---- S3 (moto server) -------------------------------------------------------------------------------


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Any]]:
    from moto.server import ThreadedMotoServer

    for k, v in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    import boto3  # type: ignore[import-untyped]

    client = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
    try:
        yield url, client
    finally:
        server.stop()


def test_a_bundle_goes_to_s3_under_object_lock_and_legal_hold_and_comes_back_whole(
    tmp_path: Path, s3: tuple[str, Any]
) -> None:
    url, client = s3
    client.create_bucket(Bucket="evidence", ObjectLockEnabledForBucket=True)
    path, docs = make_bundle(tmp_path, 6 << 20)
    target = UploadTarget(kind="s3", bucket="evidence", prefix="wt", endpoint=url, retention_days=30,
                          retention_mode="COMPLIANCE", legal_hold=True)  # fmt: skip
    result = up.upload_bundle(target, path, "wt/rec/rec-1.tar.gz", tmp_path / "state")
    assert result["sha256"] == bundles.sha256_file(path) and result["legal_hold"] and result["retain_until"]
    head = client.head_object(Bucket="evidence", Key="wt/rec/rec-1.tar.gz")
    assert head["ObjectLockMode"] == "COMPLIANCE" and head["ObjectLockLegalHoldStatus"] == "ON"
    body = client.get_object(Bucket="evidence", Key="wt/rec/rec-1.tar.gz")["Body"].read()
    round_trips(tmp_path, body, docs)
    with pytest.raises(client.exceptions.ClientError):  # immutable: the locked version cannot be deleted
        client.delete_object(Bucket="evidence", Key="wt/rec/rec-1.tar.gz", VersionId=result["version"])
    assert not list((tmp_path / "state").glob("*.json"))  # nothing left to resume


def test_a_bucket_without_object_lock_refuses_retention_and_a_missing_bucket_is_said(
    tmp_path: Path, s3: tuple[str, Any]
) -> None:
    url, client = s3
    client.create_bucket(Bucket="plain")
    path, _ = make_bundle(tmp_path)
    locked = UploadTarget(kind="s3", bucket="plain", endpoint=url, retention_days=1)
    with pytest.raises(up.UploadError, match="has no Object Lock"):
        up.upload_bundle(locked, path, "k.tar.gz", tmp_path / "state")
    with pytest.raises(up.UploadError, match="NoSuchBucket"):
        up.upload_bundle(
            UploadTarget(kind="s3", bucket="absent", endpoint=url), path, "k", tmp_path / "state"
        )
    assert "Key" not in str(client.list_objects_v2(Bucket="plain").get("Contents", []))


def test_credentials_refused_mid_upload_then_it_resumes_with_new_ones_sending_only_the_rest(
    tmp_path: Path, s3: tuple[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3
    from moto import settings as moto_settings

    url, client = s3
    client.create_bucket(Bucket="evidence")
    iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1")
    iam.create_user(UserName="recorder")
    allow = {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}
    policy = json.dumps({"Version": "2012-10-17", "Statement": [allow]})
    iam.put_user_policy(UserName="recorder", PolicyName="s3", PolicyDocument=policy)
    key = iam.create_access_key(UserName="recorder")["AccessKey"]
    creds = tmp_path / "s3-credentials.json"
    creds.write_text(
        json.dumps({"access_key_id": "AKIAOLDKEY0000000000", "secret_access_key": "old-secret-value"})
    )
    monkeypatch.setattr(up, "PART_BYTES", 5 << 20)
    path, docs = make_bundle(tmp_path, 16 << 20)  # four parts of 5 MiB
    parts_sent: list[int] = []
    real_client = up.S3Upload.client

    def counting_client(self: up.S3Upload) -> Any:
        c = real_client(self)

        def after_part(http_response: Any, **kwargs: Any) -> None:
            if http_response.status_code != 200:
                return  # refused: not stored
            parts_sent.append(1)
            if len(parts_sent) == 2:  # the old credentials stop being accepted from here on
                monkeypatch.setattr(moto_settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)

        c.meta.events.register("after-call.s3.UploadPart", after_part)
        return c

    monkeypatch.setattr(up.S3Upload, "client", counting_client)
    target = UploadTarget(kind="s3", bucket="evidence", endpoint=url, credentials_file=str(creds))
    with pytest.raises(up.UploadError, match="refuses") as err:
        up.upload_bundle(target, path, "rec-1.tar.gz", tmp_path / "state")
    assert "old-secret-value" not in str(err.value)
    assert len(parts_sent) == 2
    creds.write_text(
        json.dumps({"access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"]})
    )
    up.upload_bundle(target, path, "rec-1.tar.gz", tmp_path / "state")
    assert len(parts_sent) == 4  # the two parts already stored were not sent again
    monkeypatch.setattr(moto_settings, "INITIAL_NO_AUTH_ACTION_COUNT", float("inf"))
    round_trips(tmp_path, client.get_object(Bucket="evidence", Key="rec-1.tar.gz")["Body"].read(), docs)


# ---- GCS (gcp-storage-emulator) ---------------------------------------------------------------------


@pytest.fixture
def gcs(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    from gcp_storage_emulator.server import create_server  # type: ignore[import-untyped]
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage  # type: ignore[import-untyped]

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    url = f"http://127.0.0.1:{port}"
    client = storage.Client(
        project="wiretide",
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": url},
    )
    try:
        yield url, client
    finally:
        server.stop()


def test_a_bundle_goes_to_gcs_resumably_with_a_hold_and_comes_back_whole(
    tmp_path: Path, gcs: tuple[str, Any]
) -> None:
    url, client = gcs
    client.create_bucket("evidence")
    path, docs = make_bundle(tmp_path, 3 << 20)
    target = UploadTarget(kind="gcs", bucket="evidence", prefix="wt", endpoint=url, legal_hold=True)
    result = up.upload_bundle(target, path, "wt/rec/rec-1.tar.gz", tmp_path / "state")
    assert result["sha256"] == bundles.sha256_file(path) and result["bytes"] == path.stat().st_size
    blob = client.bucket("evidence").get_blob("wt/rec/rec-1.tar.gz")
    assert blob.metadata["sha256"] == result["sha256"]
    round_trips(tmp_path, blob.download_as_bytes(), docs)


def test_gcs_refuses_retention_a_bucket_does_not_keep(tmp_path: Path, gcs: tuple[str, Any]) -> None:
    url, client = gcs
    client.create_bucket("short")
    path, _ = make_bundle(tmp_path)
    target = UploadTarget(kind="gcs", bucket="short", endpoint=url, retention_days=30)
    with pytest.raises(up.UploadError, match="retention policy"):
        up.upload_bundle(target, path, "k.tar.gz", tmp_path / "state")
    with pytest.raises(up.UploadError):
        up.upload_bundle(
            UploadTarget(kind="gcs", bucket="absent", endpoint=url), path, "k", tmp_path / "state"
        )
