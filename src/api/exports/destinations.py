"""Where export files are stored: an S3 bucket (any S3-compatible store, through boto3) or a
folder. Both store a finished local file under a key, atomically as seen by readers (S3 puts
are atomic; in a folder the file is written beside its name and renamed), so a retried upload
of the same key replaces it whole. Blocking calls: the exporter runs them in a worker thread."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Protocol

import boto3
from botocore.config import Config as BotoConfig

from src.api.config import ExportSettings, ExportTarget

log = logging.getLogger(__name__)


class Destination(Protocol):
    """A place that holds export files by key ('2025/07/19/raw_export_….json')."""

    description: str

    def put(self, key: str, source: Path, content_type: str) -> None: ...

    def fetch(self, key: str, target: Path) -> None: ...

    def delete(self, key: str) -> None: ...

    def keys(self, under: str = "") -> list[str]: ...


class FolderDestination:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.description = folder.as_uri()

    def _path(self, key: str) -> Path:
        path = (self.folder / key).resolve()
        if not path.is_relative_to(self.folder.resolve()):
            raise ValueError(f"key {key!r} leaves the export folder")
        return path

    def put(self, key: str, source: Path, content_type: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Beside its final name, then renamed: readers never see half a file.
        # Synced before the rename and the folder after it: the watermark moves once this
        # returns, so the file must survive a power cut from then on.
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".partial-")
        try:
            with os.fdopen(handle, "wb") as out, source.open("rb") as data:
                shutil.copyfileobj(data, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)

    def fetch(self, key: str, target: Path) -> None:
        shutil.copyfile(self._path(key), target)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def keys(self, under: str = "") -> list[str]:
        root = self.folder.resolve()
        base = root / under if under else root
        if not base.exists():
            return []
        return sorted(
            str(path.relative_to(root))
            for path in base.rglob("*")
            if path.is_file() and not path.name.startswith(".partial-")
        )


class S3Destination:
    def __init__(self, target: ExportTarget, endpoint_url: str | None, region: str) -> None:
        self.bucket = target.bucket
        self.prefix = target.prefix
        self.description = target.url
        credentials: dict[str, Any] = {}
        if target.access_key:
            credentials = {
                "aws_access_key_id": target.access_key,
                "aws_secret_access_key": target.secret_key,
            }
        # Without keys boto3 looks for credentials as usual (environment, profile, instance role).
        self.client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            config=BotoConfig(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10),
            **credentials,
        )

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, source: Path, content_type: str) -> None:
        # upload_file sends large files in parts; a part that fails is retried, a failed upload
        # leaves no object (multipart uploads appear only when completed).
        self.client.upload_file(
            str(source), self.bucket, self._key(key), ExtraArgs={"ContentType": content_type}
        )

    def fetch(self, key: str, target: Path) -> None:
        self.client.download_file(self.bucket, self._key(key), str(target))

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def keys(self, under: str = "") -> list[str]:
        start = self._key(under) if under else (f"{self.prefix}/" if self.prefix else "")
        found: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start):
            for item in page.get("Contents", []):
                key = str(item["Key"])
                found.append(key[len(self.prefix) + 1 :] if self.prefix else key)
        return sorted(found)


def open_destination(target: ExportTarget, settings: ExportSettings) -> Destination:
    if target.scheme == "s3":
        return S3Destination(target, settings.s3_endpoint_url, settings.s3_region)
    return FolderDestination(Path(target.prefix))
