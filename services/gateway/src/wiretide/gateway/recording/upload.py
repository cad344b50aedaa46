"""Uploading a bundle to S3 (any S3-compatible store, `boto3`) or GCS (`google-cloud-storage`):
resumable, checksummed, with S3 Object Lock retention / legal hold or GCS holds when the job asks.

Rule: an upload is verified end to end — every part carries its SHA-256 (S3) or the object its CRC32C
(GCS), and the stored object is checked against the bundle's SHA-256 afterwards — and an interrupted
upload resumes from the parts already stored (the state is a small file beside the run). Credentials
come from the environment's chain (IRSA, workload identity, the usual variables) or a file named by
the job; they are never logged, and any error message that could carry one is scrubbed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from wiretide.common.recording import UploadTarget

PART_BYTES: Final = 8 << 20  # S3's minimum is 5 MiB (but for the last part); GCS chunks are 256 KiB multiples
MAX_PARTS: Final = 10_000  # S3's bound: larger bundles get larger parts
CHUNK: Final = 1 << 20


class UploadError(RuntimeError):
    """The upload did not complete; the message says why (never with a credential in it)."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _state_file(state_dir: Path, target: UploadTarget, key: str) -> Path:
    digest = hashlib.sha256(f"{target.kind}|{target.endpoint}|{target.bucket}|{key}".encode()).hexdigest()[
        :16
    ]
    return state_dir / f"{target.kind}-{digest}.json"


def _load_state(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _save_state(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)


def read_credentials(path: str) -> dict[str, str]:
    """A credentials file (a mounted Secret): JSON. For S3 `access_key_id`, `secret_access_key`,
    optional `session_token` (the AWS_* spellings work too); for GCS a service-account key file."""
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as exc:
        raise UploadError(f"cannot read the credentials file {path}: {exc.strerror}") from None
    except ValueError:
        raise UploadError(f"the credentials file {path} is not JSON") from None
    if not isinstance(doc, dict):
        raise UploadError(f"the credentials file {path} is not a JSON object")
    return {str(k): str(v) for k, v in doc.items() if isinstance(v, str | int)}


def _scrub(message: str, secrets: Iterable[str]) -> str:
    for s in secrets:
        if s and len(s) >= 4:
            message = message.replace(s, "***")
    return message[:500]


def upload_bundle(target: UploadTarget, path: Path, key: str, state_dir: Path) -> dict[str, Any]:
    """Upload `path` as `key`; returns what was stored (object, bytes, sha256, version, retention)."""
    if target.kind == "s3":
        return S3Upload(target, state_dir).upload(path, key)
    if target.kind == "gcs":
        return GcsUpload(target, state_dir).upload(path, key)
    raise UploadError(f"unknown upload kind {target.kind!r}")


# ---- S3 ------------------------------------------------------------------------------------------


class S3Upload:
    def __init__(self, target: UploadTarget, state_dir: Path) -> None:
        self.target = target
        self.state_dir = state_dir
        self.secrets: list[str] = []

    def client(self) -> Any:
        import boto3  # type: ignore[import-untyped]
        from botocore.config import Config  # type: ignore[import-untyped]

        kwargs: dict[str, Any] = {}
        if self.target.credentials_file:
            creds = read_credentials(self.target.credentials_file)
            access = creds.get("access_key_id") or creds.get("AWS_ACCESS_KEY_ID") or ""
            secret = creds.get("secret_access_key") or creds.get("AWS_SECRET_ACCESS_KEY") or ""
            token = creds.get("session_token") or creds.get("AWS_SESSION_TOKEN") or None
            if not access or not secret:
                raise UploadError(
                    f"the credentials file {self.target.credentials_file} lacks access_key_id or "
                    "secret_access_key"
                )
            kwargs.update(aws_access_key_id=access, aws_secret_access_key=secret, aws_session_token=token)
            self.secrets += [secret, token or ""]
        session = boto3.session.Session()
        return session.client(
            "s3",
            endpoint_url=self.target.endpoint or None,
            region_name=self.target.region or os.environ.get("AWS_REGION") or "us-east-1",
            config=Config(retries={"max_attempts": 3, "mode": "standard"}, s3={"addressing_style": "path"}),
            **kwargs,
        )

    def _fail(self, what: str, exc: Exception) -> UploadError:
        from botocore.exceptions import ClientError  # type: ignore[import-untyped]

        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            text = str(exc.response.get("Error", {}).get("Message", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("ExpiredToken", "ExpiredTokenException", "TokenRefreshRequired", "RequestExpired"):
                return UploadError(
                    f"{what}: the credentials expired ({code}); the upload resumes with fresh ones"
                )
            if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch") or status == 403:
                return UploadError(
                    f"{what}: the bucket refuses: {code or status} {_scrub(text, self.secrets)}"
                )
            return UploadError(f"{what}: {code or status}: {_scrub(text, self.secrets)}")
        return UploadError(f"{what}: {type(exc).__name__}: {_scrub(str(exc), self.secrets)}")

    def upload(self, path: Path, key: str) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError

        t = self.target
        size = path.stat().st_size
        sha = _sha256(path)
        part_bytes = max(PART_BYTES, -(-size // MAX_PARTS))
        state_path = _state_file(self.state_dir, t, key)
        state = _load_state(state_path)
        try:
            s3 = self.client()
            lock: dict[str, Any] = {}
            if t.retention_days or t.legal_hold:
                try:
                    conf = s3.get_object_lock_configuration(Bucket=t.bucket)
                except ClientError as exc:
                    code = exc.response.get("Error", {}).get("Code", "")
                    if code == "ObjectLockConfigurationNotFoundError":
                        raise UploadError(
                            f"bucket {t.bucket} has no Object Lock: retention and legal hold cannot be kept"
                        ) from None
                    raise self._fail(f"bucket {t.bucket}", exc) from None
                if conf.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") != "Enabled":
                    raise UploadError(f"bucket {t.bucket} has no Object Lock enabled")
                if t.retention_days:
                    lock["ObjectLockMode"] = t.retention_mode
                    lock["ObjectLockRetainUntilDate"] = datetime.now(UTC) + timedelta(days=t.retention_days)
                if t.legal_hold:
                    lock["ObjectLockLegalHoldStatus"] = "ON"
            if (
                state.get("sha256") != sha
                or state.get("part_bytes") != part_bytes
                or not state.get("upload_id")
            ):
                created = s3.create_multipart_upload(
                    Bucket=t.bucket,
                    Key=key,
                    ChecksumAlgorithm="SHA256",
                    ContentType="application/gzip",
                    Metadata={"sha256": sha},
                    **lock,
                )
                state = {
                    "upload_id": created["UploadId"],
                    "sha256": sha,
                    "part_bytes": part_bytes,
                    "parts": {},
                }
                _save_state(state_path, state)
            upload_id = state["upload_id"]
            parts: dict[str, dict[str, str]] = state["parts"]
            count = max(1, -(-size // part_bytes))
            with open(path, "rb") as fh:
                for n in range(1, count + 1):
                    if str(n) in parts:
                        continue
                    fh.seek((n - 1) * part_bytes)
                    data = fh.read(part_bytes)
                    checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
                    answer = s3.upload_part(
                        Bucket=t.bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=n,
                        Body=data,
                        ChecksumAlgorithm="SHA256",
                        ChecksumSHA256=checksum,
                    )
                    parts[str(n)] = {"etag": answer["ETag"], "sha256": checksum}
                    _save_state(state_path, state)
            done = s3.complete_multipart_upload(
                Bucket=t.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={
                    "Parts": [
                        {"PartNumber": int(n), "ETag": p["etag"], "ChecksumSHA256": p["sha256"]}
                        for n, p in sorted(parts.items(), key=lambda kv: int(kv[0]))
                    ]
                },
            )
            version = {"VersionId": done["VersionId"]} if done.get("VersionId") else {}
            head = s3.head_object(Bucket=t.bucket, Key=key, **version)
            # Stores that do not take the lock with the upload get it on the version now (and are checked).
            if lock.get("ObjectLockLegalHoldStatus") and head.get("ObjectLockLegalHoldStatus") != "ON":
                s3.put_object_legal_hold(Bucket=t.bucket, Key=key, LegalHold={"Status": "ON"}, **version)
            if lock.get("ObjectLockMode") and not head.get("ObjectLockRetainUntilDate"):
                retention = {
                    "Mode": lock["ObjectLockMode"],
                    "RetainUntilDate": lock["ObjectLockRetainUntilDate"],
                }
                s3.put_object_retention(Bucket=t.bucket, Key=key, Retention=retention, **version)
            if lock:
                head = s3.head_object(Bucket=t.bucket, Key=key, **version)
        except (ClientError, BotoCoreError) as exc:
            if isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") == "NoSuchUpload":
                state_path.unlink(missing_ok=True)  # the store forgot it: the next try starts afresh
            raise self._fail(f"upload to s3://{t.bucket}/{key}", exc) from None
        if int(head.get("ContentLength", -1)) != size or head.get("Metadata", {}).get("sha256") != sha:
            raise UploadError(f"s3://{t.bucket}/{key}: the stored object does not match the bundle")
        state_path.unlink(missing_ok=True)
        return {
            "object": f"s3://{t.bucket}/{key}",
            "bytes": size,
            "sha256": sha,
            "version": done.get("VersionId") or "",
            "retain_until": str(head.get("ObjectLockRetainUntilDate") or ""),
            "legal_hold": head.get("ObjectLockLegalHoldStatus") == "ON",
        }


# ---- GCS -----------------------------------------------------------------------------------------


class GcsUpload:
    def __init__(self, target: UploadTarget, state_dir: Path) -> None:
        self.target = target
        self.state_dir = state_dir

    def client(self) -> Any:
        from google.cloud import storage  # type: ignore[import-untyped]

        t = self.target
        options = {"api_endpoint": t.endpoint} if t.endpoint else None
        if t.credentials_file:
            from google.oauth2 import service_account

            try:
                creds = service_account.Credentials.from_service_account_file(t.credentials_file)  # type: ignore[no-untyped-call]
            except (OSError, ValueError) as exc:
                raise UploadError(f"the credentials file {t.credentials_file} is not a service-account key: "
                                  f"{type(exc).__name__}") from None  # fmt: skip
            return storage.Client(project=creds.project_id, credentials=creds, client_options=options)
        if t.endpoint:  # an emulator or a private endpoint without credentials of its own
            from google.auth.credentials import AnonymousCredentials

            return storage.Client(
                project="wiretide",
                credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
                client_options=options,
            )
        return storage.Client()  # the environment: workload identity, GOOGLE_APPLICATION_CREDENTIALS

    def upload(self, path: Path, key: str) -> dict[str, Any]:
        from google.api_core import exceptions as gexc
        from google.auth import exceptions as authexc
        from google.resumable_media import common as rmcommon

        t = self.target
        size = path.stat().st_size
        sha = _sha256(path)
        state_path = _state_file(self.state_dir, t, key)
        state = _load_state(state_path)
        try:
            client = self.client()
            bucket = client.bucket(t.bucket)
            if t.retention_days:
                bucket.reload()
                period = bucket.retention_period or 0
                if period < t.retention_days * 86_400:
                    raise UploadError(
                        f"bucket {t.bucket} keeps objects {period}s, "
                        f"less than the {t.retention_days} days asked "
                        "(set a bucket retention policy)"
                    )
            blob = bucket.blob(key, chunk_size=PART_BYTES)
            blob.metadata = {"sha256": sha}
            session = state.get("session") if state.get("sha256") == sha else None
            resuming = bool(session)
            if not session:
                session = blob.create_resumable_upload_session(
                    content_type="application/gzip", size=size, client=client
                )
                state = {"session": session, "sha256": sha}
                _save_state(state_path, state)
            self._send(client, session, path, size, resuming)
            blob.reload()
            if t.legal_hold and not blob.event_based_hold:
                blob.event_based_hold = True
                blob.patch()
        except (gexc.GoogleAPICallError, authexc.GoogleAuthError, rmcommon.InvalidResponse, OSError) as exc:
            status = getattr(exc, "code", None) or getattr(
                getattr(exc, "response", None), "status_code", None
            )
            if status in (404, 410):
                state_path.unlink(missing_ok=True)  # the session expired: the next try starts afresh
            if status in (401, 403) or isinstance(exc, authexc.GoogleAuthError):
                raise UploadError(f"gs://{t.bucket}/{key}: the bucket refuses ({status or 'credentials'}); "
                                  "the upload resumes with valid credentials") from None  # fmt: skip
            raise UploadError(f"gs://{t.bucket}/{key}: {type(exc).__name__} {status or ''}".strip()) from None
        if int(blob.size or -1) != size or (blob.metadata or {}).get("sha256") != sha:
            raise UploadError(f"gs://{t.bucket}/{key}: the stored object does not match the bundle")
        state_path.unlink(missing_ok=True)
        return {
            "object": f"gs://{t.bucket}/{key}",
            "bytes": size,
            "sha256": sha,
            "version": str(blob.generation or ""),
            "crc32c": blob.crc32c or "",
            "legal_hold": bool(blob.event_based_hold),
        }

    @staticmethod
    def _send(client: Any, session: str, path: Path, size: int, resuming: bool) -> None:
        """Send the file through the resumable session (the JSON API's protocol), from where the store
        says it stands: a status query first, then chunks, each answered 308 until the last."""
        http = client._http  # the client's authorised session
        offset = 0
        if resuming:  # a session from an earlier try: ask how much of it the store holds
            resp = http.put(session, headers={"Content-Range": f"bytes */{size}"}, data=b"", timeout=60)
            held = _committed(resp)
            if held is None:
                return  # already complete
            offset = held
        with open(path, "rb") as fh:
            while True:
                fh.seek(offset)
                data = fh.read(PART_BYTES)
                end = offset + len(data) - 1
                rng = f"bytes {offset}-{end}/{size}" if data else f"bytes */{size}"
                resp = http.put(session, headers={"Content-Range": rng}, data=data, timeout=300)
                nxt = _committed(resp)
                if nxt is None:
                    return
                if nxt <= offset and data:
                    raise UploadError(f"the store accepted nothing of bytes {offset}-{end}")
                offset = nxt


def _committed(resp: Any) -> int | None:
    """Bytes the store holds after a resumable request (None: the object is complete)."""
    if resp.status_code in (200, 201):
        return None
    if resp.status_code == 308:
        rng = resp.headers.get("Range", "")
        return int(rng.rpartition("-")[2]) + 1 if rng else 0
    if resp.status_code in (401, 403):
        raise UploadError(
            f"the bucket refuses ({resp.status_code}); the upload resumes with valid credentials"
        )
    if resp.status_code in (404, 410):
        raise UploadError(f"the upload session expired ({resp.status_code}); the next try starts afresh")
    raise UploadError(f"the store answered HTTP {resp.status_code} to a resumable upload")
