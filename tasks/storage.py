"""Object storage: a local directory (the embedded default) or an S3 prefix, behind one interface.

S3 goes through boto3 and is configured only by the standard AWS variables
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``/``AWS_REGION``,
``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` for S3-compatible stores such as MinIO,
``AWS_MAX_ATTEMPTS``). Transient S3 errors (5xx, throttling, connection resets) are retried
with backoff by botocore's standard retry mode; what still fails is raised as
:class:`StorageError`, with the bucket and key but never a credential.

Every write is atomic: a reader sees the whole object or nothing. Local files are
written to a temporary name in the same directory and renamed; S3 objects become
visible only when their (multipart) upload completes.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from mammo import contract as c
from mammo.inventory import FileInfo

S3_MAX_ATTEMPTS = 8  # per request, the first included, unless AWS_MAX_ATTEMPTS says otherwise
READ_ATTEMPTS = 3  # whole Parquet reads (see read_parquet)
TEMPORARY_PATTERN = ".*.tmp-*"  # LocalStore.staged_write's temporary names


class StorageURIError(ValueError):
    """A location that names no store (``s3:/x``, ``s3://``, ``ftp://...``)."""


class StorageError(RuntimeError):
    """A storage operation failed for good (after retries)."""


class Store(Protocol):
    uri: str

    def list_files(self, prefix: str) -> Iterator[FileInfo]: ...
    def read_bytes(self, relpath: str) -> bytes: ...
    def write_bytes(self, relpath: str, data: bytes) -> None: ...
    def exists(self, relpath: str) -> bool: ...
    def delete(self, relpath: str) -> None: ...
    def staged_write(self, relpath: str) -> contextlib.AbstractContextManager[Path]: ...
    def remove_temporaries(self, prefix: str, recursive: bool = True) -> list[str]: ...
    def arrow_path(self, relpath: str) -> tuple[pafs.FileSystem, str]: ...


def check_uri(uri: str) -> str:
    """``uri``'s scheme ("s3", "" or "file"), or a :class:`StorageURIError` saying why not."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3" and not parsed.netloc:
        raise StorageURIError(f"S3 URI without a bucket: {uri!r} (use s3://bucket/prefix)")
    if parsed.scheme not in ("s3", "", "file"):
        raise StorageURIError(
            f"unsupported storage URI {uri!r}: use a local path or s3://bucket/prefix"
        )
    return parsed.scheme


def open_store(uri: str) -> Store:
    """A store for ``s3://bucket/prefix`` or a local directory path (``file://`` allowed)."""
    scheme, parsed = check_uri(uri), urlparse(uri)
    if scheme == "s3":
        return S3Store(parsed.netloc, parsed.path.strip("/"))
    return LocalStore(Path(parsed.path if scheme else uri))


def absolute_uri(uri: str) -> str:
    """A local path made absolute (it is recorded and read back from elsewhere); S3 as is."""
    if urlparse(uri).scheme in ("", "file"):
        return str(Path(urlparse(uri).path if uri.startswith("file:") else uri).absolute())
    return uri


def join_uri(base: str, relpath: str) -> str:
    return f"{base.rstrip('/')}/{relpath}"


def read_parquet(store: Store, relpath: str, columns: list[str] | None = None) -> pa.Table:
    """Read a Parquet object, fetching only the requested columns (range reads on S3).

    pyarrow's S3 client retries transient errors itself, except on a range read shorter than
    the error's XML body: a 503 SlowDown or a 500 answering a read of a few hundred bytes (a
    small column chunk) fails at once as "INTERNAL_FAILURE ... Failed to flush response
    stream". So a failed read is tried again whole, READ_ATTEMPTS times in all, with backoff.
    """
    fs, path = store.arrow_path(relpath)
    attempt = 1
    while True:
        try:
            return _read_table(path, fs, columns)
        except FileNotFoundError:
            raise
        except OSError as exc:
            if attempt >= READ_ATTEMPTS:
                raise StorageError(f"cannot read {join_uri(store.uri, relpath)}: {exc}") from exc
        time.sleep(random.uniform(0.5, 1.0) * 2 ** (attempt - 1))  # exponential, jittered
        attempt += 1


def _read_table(path: str, fs: pafs.FileSystem, columns: list[str] | None) -> pa.Table:
    """The columns asked for; image columns added since the file was written come as nulls."""
    if columns is None or not any(name in c.ADDED_IMAGE_FIELDS for name in columns):
        return pq.read_table(path, filesystem=fs, columns=columns)
    missing = c.missing_added_columns(pq.read_schema(path, filesystem=fs).names, columns)
    present = [name for name in columns if name not in missing]
    table = pq.read_table(path, filesystem=fs, columns=present)
    return c.with_added_columns(table, missing, columns)


def write_parquet(store: Store, relpath: str, table: pa.Table) -> None:
    """Write a Parquet object atomically. Deterministic bytes for the same table."""
    with store.staged_write(relpath) as local:
        pq.write_table(table, local, compression="zstd", store_schema=True)


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().absolute()
        self.uri = str(self.root)

    def _path(self, relpath: str) -> Path:
        path = (self.root / relpath).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"path escapes the store root: {relpath!r}")
        return path

    def list_files(self, prefix: str) -> Iterator[FileInfo]:
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return
        stack = [base]
        while stack:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    elif entry.is_file(follow_symlinks=False) and ".tmp-" not in entry.name:
                        st = entry.stat(follow_symlinks=False)
                        rel = Path(entry.path).relative_to(self.root).as_posix()
                        yield FileInfo(rel, st.st_size, str(st.st_mtime_ns))

    def read_bytes(self, relpath: str) -> bytes:
        return self._path(relpath).read_bytes()

    def write_bytes(self, relpath: str, data: bytes) -> None:
        with self.staged_write(relpath) as local:
            local.write_bytes(data)

    def exists(self, relpath: str) -> bool:
        return self._path(relpath).exists()

    def delete(self, relpath: str) -> None:
        self._path(relpath).unlink(missing_ok=True)

    @contextlib.contextmanager
    def staged_write(self, relpath: str) -> Iterator[Path]:
        """Yield a temporary path beside the target; rename it into place on success."""
        target = self._path(relpath)
        target.parent.mkdir(parents=True, exist_ok=True)
        # a name TEMPORARY_PATTERN matches: readers skip it, remove_temporaries finds it
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
        os.close(fd)
        try:
            yield Path(tmp)
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def remove_temporaries(self, prefix: str, recursive: bool = True) -> list[str]:
        """Delete the temporary files of writers killed before their rename, under ``prefix``
        (the folder itself only when not ``recursive``).

        A process killed (SIGKILL, a lost node) inside :meth:`staged_write` leaves its
        ``.<name>.tmp-<random>`` file behind; readers skip such names but they would stay
        forever. Only safe while no other writer works there (one ingest per OUT).
        Returns the removed paths, relative to the root.
        """
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return []
        found = base.rglob(TEMPORARY_PATTERN) if recursive else base.glob(TEMPORARY_PATTERN)
        removed = []
        for path in sorted(found):
            if path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)
                removed.append(path.relative_to(self.root).as_posix())
        return removed

    def arrow_path(self, relpath: str) -> tuple[pafs.FileSystem, str]:
        return pafs.LocalFileSystem(), str(self._path(relpath))


def s3_endpoint() -> str | None:
    """The S3 endpoint from the standard variables, if one is set (MinIO, moto, ...)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def s3_max_attempts() -> int:
    """Attempts per S3 request, the first included: ``AWS_MAX_ATTEMPTS`` (the standard
    variable, read as boto3 and the AWS CLI read it) or :data:`S3_MAX_ATTEMPTS`. Retries back
    off exponentially with jitter ("standard" mode of botocore and of the AWS C++ SDK)."""
    value = os.environ.get("AWS_MAX_ATTEMPTS")
    return max(1, int(value)) if value else S3_MAX_ATTEMPTS


def s3_client() -> Any:  # a botocore S3 client; boto3 ships no type stubs
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"total_max_attempts": s3_max_attempts(), "mode": "standard"},
        connect_timeout=10,
        read_timeout=60,
        max_pool_connections=32,
    )
    return boto3.session.Session().client("s3", config=config)


def arrow_s3_filesystem() -> pafs.S3FileSystem:
    """pyarrow's S3 filesystem, pointed at the same endpoint boto3 uses."""
    kwargs: dict[str, object] = {
        "region": os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or "us-east-1",
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=s3_max_attempts()),
    }
    endpoint = s3_endpoint()
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs["endpoint_override"] = parsed.netloc or parsed.path
        kwargs["scheme"] = parsed.scheme or "https"
    return pafs.S3FileSystem(**kwargs)


class S3Store:
    def __init__(self, bucket: str, prefix: str) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.uri = f"s3://{bucket}/{prefix}".rstrip("/")
        self._client: Any = None

    def __getstate__(self) -> dict[str, object]:  # clients do not pickle; rebuilt per process
        return {"bucket": self.bucket, "prefix": self.prefix, "uri": self.uri, "_client": None}

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = s3_client()
        return self._client

    def _key(self, relpath: str) -> str:
        return f"{self.prefix}/{relpath}" if self.prefix else relpath

    def _fail(self, action: str, relpath: str, exc: Exception) -> StorageError:
        return StorageError(f"S3 {action} failed for {join_uri(self.uri, relpath)}: {exc}")

    def list_files(self, prefix: str) -> Iterator[FileInfo]:
        from botocore.exceptions import BotoCoreError, ClientError

        root = f"{self.prefix}/" if self.prefix else ""
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=root + prefix
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    yield FileInfo(obj["Key"][len(root) :], obj["Size"], obj["ETag"].strip('"'))
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("list", prefix, exc) from exc

    def read_bytes(self, relpath: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(relpath))["Body"]
            return bytes(body.read())
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise FileNotFoundError(join_uri(self.uri, relpath)) from exc
            raise self._fail("read", relpath, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("read", relpath, exc) from exc

    def write_bytes(self, relpath: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(relpath), Body=data)
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("write", relpath, exc) from exc

    def exists(self, relpath: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(relpath))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._fail("head", relpath, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("head", relpath, exc) from exc

    def delete(self, relpath: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(relpath))
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("delete", relpath, exc) from exc

    @contextlib.contextmanager
    def staged_write(self, relpath: str) -> Iterator[Path]:
        """Yield a local temporary file; upload it on success (multipart uploads are atomic)."""
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        tmpdir = Path(tempfile.mkdtemp(prefix="mammo-upload-"))
        try:
            local = tmpdir / Path(relpath).name
            yield local
            try:
                self.client.upload_file(str(local), self.bucket, self._key(relpath))
            except (BotoCoreError, ClientError, S3UploadFailedError) as exc:
                raise self._fail("upload", relpath, exc) from exc
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)

    def remove_temporaries(self, prefix: str, recursive: bool = True) -> list[str]:
        """Nothing to remove: an S3 object appears only when its upload completes."""
        return []

    def arrow_path(self, relpath: str) -> tuple[pafs.FileSystem, str]:
        return arrow_s3_filesystem(), f"{self.bucket}/{self._key(relpath)}"
