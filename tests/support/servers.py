"""Real servers on 127.0.0.1 for tests, started and stopped by the tests themselves."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator

# Sentinel credentials: tests scan every output for these strings (they must never appear).
SENTINEL_ACCESS_KEY = "AKIAMAMMOSENTINEL7Q2X"
SENTINEL_SECRET_KEY = "mammoSentinelSecret/do-not-log/9f3a1c"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def patched_environ(values: dict[str, str]) -> Iterator[None]:
    old = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def moto_s3() -> Iterator[str]:
    """moto's S3 in server mode (a real HTTP endpoint) with sentinel credentials in the env."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": SENTINEL_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SENTINEL_SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": url,
    }
    try:
        with patched_environ(env):
            yield url
    finally:
        server.stop()


def create_bucket(name: str) -> None:
    import boto3

    boto3.client("s3").create_bucket(Bucket=name)


def upload_tree(local_root: str, bucket: str, prefix: str) -> int:
    """Copy a local directory into s3://bucket/prefix; returns the number of objects."""
    import boto3

    client = boto3.client("s3")
    count = 0
    for dirpath, _, names in os.walk(local_root):
        for name in names:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, local_root).replace(os.sep, "/")
            client.upload_file(path, bucket, f"{prefix}/{rel}" if prefix else rel)
            count += 1
    return count
