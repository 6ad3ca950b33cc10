"""Where adapter versions live for every model server: a shared directory or an S3 bucket (HOUSESTYLE_ADAPTER_STORE).

A version is `<store>/<version>/`: the adapter's files and `housestyle_manifest.json`, the manifest written last (a
version without one is incomplete and never served). `AdapterStore.fetch_verified` brings a version into this host's
cache and checks it before anything loads it: the manifest's combined hash against the version id's suffix (so the
manifest is that version's), then every file's sha256 against the manifest.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from core.adapter_manifest import MANIFEST_NAME, AdapterFiles, combined_hash
from core.checksums import sha256_file
from core.errors import InputError
from core.settings import Settings

# the trainer's version ids end in the first hex digits of the adapter's combined hash: v0003-1a2b3c4d
_VERSION_HASH_SUFFIX = re.compile(r"-([0-9a-f]{8,64})$")
# a file a manifest may name: one plain name inside the version's folder (no '/', no '..', no hidden files)
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
STORE_FORMS = ("an absolute path or file:///path (a directory mounted at the same path on every host) or "
               "s3://bucket/prefix")


class AdapterStoreError(InputError):
    """A version is not in the store, is incomplete, does not match its checksums, or the store cannot be reached."""


def version_hash_suffix(version: str) -> str:
    """The hex suffix of a trainer-made version id (v0003-1a2b3c4d -> 1a2b3c4d)."""
    found = _VERSION_HASH_SUFFIX.search(version)
    if found is None:
        raise AdapterStoreError(
            f"version {version!r} does not end in its adapter hash (like v0003-1a2b3c4d), so its files cannot be "
            "checked; only versions the trainer registered go through the adapter store"
        )
    return found.group(1)


def checked_manifest(version: str, raw: bytes) -> dict[str, str]:
    """The files (name -> sha256) a manifest lists, once it is shown to be `version`'s: plain file names, and a
    combined hash that starts with the version id's suffix."""
    suffix = version_hash_suffix(version)
    fix = "publish the version from its registered folder (a damaged copy in the store deleted first)"
    try:
        files = AdapterFiles.model_validate_json(raw).files
    except ValidationError:
        raise AdapterStoreError(f"the {MANIFEST_NAME} of {version} lists no 'files' checksums; {fix}") from None
    unsafe = sorted(name for name in files if not _FILE_NAME.fullmatch(name) or name == MANIFEST_NAME)
    if unsafe or not files:
        raise AdapterStoreError(f"the {MANIFEST_NAME} of {version} names no files or files outside its folder "
                                f"({', '.join(unsafe)}); {fix}")
    if not combined_hash(files).startswith(suffix):
        raise AdapterStoreError(f"the {MANIFEST_NAME} of {version} is not that version's: its files' combined sha256 "
                                f"does not start with {suffix}; {fix}")
    return files


def _matches(folder: Path, files: dict[str, str]) -> str | None:
    """The first file of `folder` whose sha256 is not the manifest's (missing included), None when all match."""
    for name, digest in sorted(files.items()):
        path = folder / name
        if not path.is_file() or sha256_file(path) != digest:
            return name
    return None


class AdapterStore(ABC):
    """A place every service and vLLM host reads adapter versions from; `cache_dir` is this host's verified copies."""

    def __init__(self, location: str, cache_dir: Path) -> None:
        self.location = location.rstrip("/")
        self.cache_dir = Path(cache_dir)

    @abstractmethod
    def read(self, version: str, name: str) -> bytes | None:
        """One file of a version, None when the store does not hold it."""

    @abstractmethod
    def download(self, version: str, name: str, dest: Path) -> None:
        """Copy one file of a version to `dest`."""

    @abstractmethod
    def write_version(self, version: str, folder: Path, names: list[str]) -> None:
        """Copy `names` from `folder`, then its manifest last, into `<store>/<version>/`."""

    def where(self, version: str, name: str = "") -> str:
        return f"{self.location}/{version}/{name}"

    def publish(self, version: str, folder: Path) -> bool:
        """Copy a registered version's folder into the store, manifest last; False when it is there already.

        The local files are checked against their manifest first: a changed folder is never published."""
        folder = Path(folder)
        manifest_path = folder / MANIFEST_NAME
        if not manifest_path.is_file():
            raise AdapterStoreError(f"adapter folder {folder} of {version} has no {MANIFEST_NAME} (moved or deleted?); "
                                    "only versions the trainer registered can be published")
        raw = manifest_path.read_bytes()
        files = checked_manifest(version, raw)
        changed = _matches(folder, files)
        if changed is not None:
            raise AdapterStoreError(f"adapter file {folder / changed} of {version} is missing or changed since "
                                    "training (checksum mismatch); restore it or retrain to a new version")
        existing = self.read(version, MANIFEST_NAME)
        if existing is not None:
            if checked_manifest(version, existing) != files:
                raise AdapterStoreError(f"{self.where(version)} holds other files than {folder}; versions are never "
                                        "overwritten: remove it from the store by hand if it is damaged")
            return False
        self.write_version(version, folder, sorted(files))
        return True

    def fetch_verified(self, version: str) -> Path:
        """The version's folder in this host's cache, every file checked against the store's manifest (a cached copy
        is checked again). AdapterStoreError names the file that does not match; nothing of it is kept."""
        raw = self.read(version, MANIFEST_NAME)
        if raw is None:
            raise AdapterStoreError(f"{self.where(version)} has no {MANIFEST_NAME}: the version is not published (or "
                                    f"only partly); run `housestyle adapters publish {version}`")
        files = checked_manifest(version, raw)
        cached = self.cache_dir / version
        if cached.is_dir() and (cached / MANIFEST_NAME).is_file() and (cached / MANIFEST_NAME).read_bytes() == raw \
                and _matches(cached, files) is None:
            return cached
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".fetching-{version}-", dir=self.cache_dir))
        try:
            for name in sorted(files):
                self.download(version, name, staging / name)
                if sha256_file(staging / name) != files[name]:
                    raise AdapterStoreError(
                        f"{self.where(version, name)} does not match the sha256 its manifest lists: the store's copy "
                        f"was changed or damaged; delete {self.where(version)} from the store and run `housestyle "
                        f"adapters publish {version}` again"
                    )
            (staging / MANIFEST_NAME).write_bytes(raw)
            if cached.exists():  # a stale or damaged copy
                shutil.rmtree(cached)
            try:
                os.rename(staging, cached)
            except OSError:  # another process on this host fetched it meanwhile
                if _matches(cached, files) is not None:
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return cached


class DirectoryStore(AdapterStore):
    """A directory shared by every host at the same path (NFS, a Kubernetes volume); a version appears by rename."""

    def __init__(self, root: Path, cache_dir: Path) -> None:
        super().__init__(str(root), cache_dir)
        self.root = root

    def _root(self) -> Path:
        if not self.root.is_dir():
            raise AdapterStoreError(f"adapter store {self.root} does not exist on this host; mount the shared "
                                    "directory there (the same path on every service and vLLM host) or fix "
                                    "HOUSESTYLE_ADAPTER_STORE")
        return self.root

    def read(self, version: str, name: str) -> bytes | None:
        path = self._root() / version / name
        return path.read_bytes() if path.is_file() else None

    def download(self, version: str, name: str, dest: Path) -> None:
        source = self._root() / version / name
        if not source.is_file():
            raise AdapterStoreError(f"{source} is missing from the store; delete the version from the store and "
                                    "publish it again")
        shutil.copyfile(source, dest)

    def write_version(self, version: str, folder: Path, names: list[str]) -> None:
        staging = Path(tempfile.mkdtemp(prefix=f".publishing-{version}-", dir=self._root()))
        try:
            for name in names:
                shutil.copyfile(folder / name, staging / name)
            shutil.copyfile(folder / MANIFEST_NAME, staging / MANIFEST_NAME)
            target = self.root / version
            try:
                os.rename(staging, target)
            except OSError:  # there already: another publisher's complete copy stands, an incomplete one is replaced
                if (target / MANIFEST_NAME).is_file():
                    return
                aside = Path(tempfile.mkdtemp(prefix=f".incomplete-{version}-", dir=self.root))
                os.rename(target, aside / version)  # never served (no manifest), so nobody reads it
                os.rename(staging, target)
                shutil.rmtree(aside, ignore_errors=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


class S3Store(AdapterStore):
    """An S3-compatible bucket (AWS, MinIO, Ceph...), reached with boto3 and its standard credential chain."""

    def __init__(self, bucket: str, prefix: str, cache_dir: Path, *, endpoint_url: str | None) -> None:
        super().__init__(f"s3://{bucket}/{prefix}".rstrip("/"), cache_dir)
        self.bucket, self.prefix, self.endpoint_url = bucket, prefix.strip("/"), endpoint_url
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3  # only where the store is S3: the CLI starts without it

            session = boto3.session.Session()
            self._client = session.client("s3", endpoint_url=self.endpoint_url or None,
                                          region_name=session.region_name or "us-east-1")
        return self._client

    def key(self, version: str, name: str) -> str:
        return "/".join(part for part in (self.prefix, version, name) if part)

    def _failed(self, exc: Exception, what: str) -> AdapterStoreError:
        return AdapterStoreError(f"adapter store {self.location} failed to {what}: {exc}; check "
                                 "HOUSESTYLE_ADAPTER_STORE_ENDPOINT_URL and the AWS credentials (boto3's usual chain)")

    @staticmethod
    def _missing(exc: Exception) -> bool:
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        return code in ("NoSuchKey", "404", "NotFound")

    def read(self, version: str, name: str) -> bytes | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.key(version, name))["Body"].read()
        except ClientError as exc:
            if self._missing(exc):
                return None
            raise self._failed(exc, f"read {self.where(version, name)}") from None
        except BotoCoreError as exc:
            raise self._failed(exc, f"read {self.where(version, name)}") from None

    def download(self, version: str, name: str, dest: Path) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.download_file(self.bucket, self.key(version, name), str(dest))
        except (BotoCoreError, ClientError) as exc:
            if self._missing(exc):
                raise AdapterStoreError(f"{self.where(version, name)} is missing from the store; publish the version "
                                        "again") from None
            raise self._failed(exc, f"read {self.where(version, name)}") from None

    def write_version(self, version: str, folder: Path, names: list[str]) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            for name in [*names, MANIFEST_NAME]:  # the manifest last: until it is there, the version is not served
                self.client.upload_file(str(folder / name), self.bucket, self.key(version, name))
        except (BotoCoreError, ClientError) as exc:
            raise self._failed(exc, f"write {self.where(version)}") from None


def open_adapter_store(settings: Settings) -> AdapterStore | None:
    """The store HOUSESTYLE_ADAPTER_STORE names, None when it is empty (adapters stay in each host's folders)."""
    location = settings.adapter_store.strip()
    if not location:
        return None
    cache_dir = Path(settings.adapter_cache_dir or settings.home / "adapter-cache").expanduser().resolve()
    if location.startswith("s3://"):
        bucket, _, prefix = location.removeprefix("s3://").partition("/")
        if not bucket:
            raise AdapterStoreError(f"HOUSESTYLE_ADAPTER_STORE={location} names no bucket; use s3://bucket/prefix")
        return S3Store(bucket, prefix, cache_dir, endpoint_url=settings.adapter_store_endpoint_url)
    path = location.removeprefix("file://") if location.startswith("file:///") else location
    if "://" in path or not Path(path).is_absolute():
        raise AdapterStoreError(f"HOUSESTYLE_ADAPTER_STORE={location} is not a store HouseStyle knows; use "
                                f"{STORE_FORMS}")
    return DirectoryStore(Path(path), cache_dir)
