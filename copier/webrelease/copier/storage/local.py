# ruff: noqa: PTH101, PTH103, PTH105, PTH106, PTH108, PTH115, PTH116, PTH118, PTH120, PTH123
# Plain str paths and os.* calls: keys are joined onto the folder as strings, and the hot path
# (many small files) avoids building a Path object per call.
"""The ``file://`` backend: a folder on a local filesystem behaves like an S3 prefix.

- **Keys** map to paths below the location's folder; a key never leaves it (``..``, absolute
  keys and backslashes are refused, and the resolved path is checked against the folder, so a
  symlinked directory cannot lead outside either).
- **Metadata** (content type, user metadata, and the object's MD5) lives in a sidecar JSON file
  ``<folder>/.webrelease-meta/<name>.json`` next to each file. ``list()`` never shows these
  folders and keys naming them are refused. A sidecar is *bound* to its data file by inode, size,
  mtime and ctime: if the file was changed behind our back (or a crash left the two out of step) the
  sidecar is ignored and the object simply has no metadata, so a stale hash can never make a
  changed file look unchanged. Sidecars rather than extended attributes because they work on
  every filesystem (tmpfs before Linux 6.6, macOS, network mounts) and survive ``cp -r``/``tar``.
- **Writes** are atomic: data goes to a temporary file in the same folder (inside the hidden
  ``.webrelease-meta/``) and is renamed into place, so readers see the old object or the new
  one, never a partial file.
- **Requests**: every operation is reported to ``on_request`` with the S3 operation name it
  stands for, so tests count and order requests the same way on both backends.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import IO, Any
from urllib.parse import quote, unquote

from webrelease.copier.storage.base import (
    DELETE_BATCH,
    InvalidKey,
    Location,
    NotFound,
    ObjectInfo,
    RequestEvent,
    RequestHook,
    StorageError,
    UnusableFile,
    check_key,
    check_metadata,
    guess_content_encoding,
    guess_content_type,
)

META_DIR = ".webrelease-meta"
_LIST_PAGE = 1000
_CHUNK = 1 << 20
_WRITE_ATTEMPTS = 5


def _md5_of_file(path: str) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _sidecar_path(path: str) -> str:
    head, name = os.path.split(path)
    return os.path.join(head, META_DIR, name + ".json")


def _binding(st: os.stat_result) -> dict[str, int]:
    # ctime too: a same-size edit in place whose mtime was put back (``os.utime``, ``touch -r``)
    # keeps inode, size and mtime, but no one can set the ctime back
    return {
        "ino": st.st_ino,
        "dev": st.st_dev,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
    }


class LocalStore:
    """Folders as object storage. Thread-safe: no shared mutable state; every write is a rename."""

    def __init__(self, *, on_request: RequestHook | None = None) -> None:
        self._on_request = on_request

    # -- helpers -------------------------------------------------------------------------------

    def _emit(self, operation: str, path: str) -> None:
        if self._on_request is not None:
            self._on_request(RequestEvent(operation, "", path))

    @staticmethod
    def _root(loc: Location) -> str:
        if loc.scheme != "file":
            raise StorageError(f"the local store cannot reach {loc.url}")
        if not loc.prefix.startswith("/"):
            raise StorageError(f"{loc.url}: a local location must be an absolute folder")
        return loc.prefix if loc.prefix.endswith("/") else loc.prefix + "/"

    def _path(self, loc: Location, key: str) -> str:
        root = self._root(loc)
        # S3's 1024-byte limit is on the key: the folder's own path does not count (a path the
        # filesystem finds too long fails the request, naming it)
        check_key(key)
        if META_DIR in key.split("/"):
            raise InvalidKey(f"key {key!r} names the reserved folder {META_DIR}")
        path = root + key
        # Lexically safe; also refuse paths that resolve outside the folder through a symlink.
        real_root = os.path.realpath(root)
        real = os.path.realpath(path)
        if real != real_root and not real.startswith(real_root.rstrip("/") + "/"):
            raise InvalidKey(f"key {key!r} resolves outside {loc.url}")
        return path

    def _dest_path(self, loc: Location, key: str) -> str:
        """:meth:`_path` for a write or a delete: no folder between the location and the file may
        be a symlink. Through one (``old -> assets`` in a site), a prune of ``old/app.js`` deletes
        ``assets/app.js`` and two keys write one file: the site would not be what was released."""
        path = self._path(loc, key)
        link = first_link(self._root(loc), key.split("/")[:-1])
        if link is not None:
            raise InvalidKey(
                f"{loc.url}{key}: the folder {link[0]!r} is a symlink (to {link[1]!r}); writing or "
                "deleting through it would change another file than this key: replace the link with "
                "a folder, or remove it"
            )
        return path

    @staticmethod
    def _read_sidecar(path: str, st: os.stat_result) -> dict[str, Any] | None:
        try:
            with open(_sidecar_path(path), "rb") as f:
                data = json.load(f)
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("binding") != _binding(st):
            return None
        return data

    @staticmethod
    def _stat_file(path: str, loc: Location, key: str) -> os.stat_result:
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"{loc.url}{key}: no such object") from None
        except OSError as exc:
            raise StorageError(f"{loc.url}{key}: {exc.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise NotFound(f"{loc.url}{key}: no such object")
        return st

    def _write(
        self,
        path: str,
        fill: Callable[[IO[bytes]], str],
        content_type: str,
        metadata: Mapping[str, str],
        what: str,
        *,
        encoding: str | None = None,
    ) -> None:
        """Write a file atomically with its sidecar; ``fill`` writes the bytes and returns their MD5."""
        folder = os.path.dirname(path)
        meta_dir = os.path.join(folder, META_DIR)
        for attempt in range(_WRITE_ATTEMPTS):
            tmp = tmp_meta = None
            try:
                os.makedirs(meta_dir, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=meta_dir, prefix="tmp-")
                with os.fdopen(fd, "wb") as f:
                    md5 = fill(f)
                os.chmod(tmp, 0o644)
                # Data first: between the two renames the old sidecar no longer matches the new
                # file and is ignored, so metadata can be missing for an instant but never wrong.
                os.replace(tmp, path)
                tmp = None
                st = os.stat(path)  # after the rename, which sets the ctime the binding holds
                sidecar = {
                    "binding": _binding(st),
                    "md5": md5,
                    "content_type": content_type,
                    "content_encoding": encoding,
                    "metadata": dict(metadata),
                }
                fd, tmp_meta = tempfile.mkstemp(dir=meta_dir, prefix="tmp-")
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(sidecar, f, separators=(",", ":"))
                os.replace(tmp_meta, _sidecar_path(path))
                tmp_meta = None
                return
            except FileNotFoundError:
                # A concurrent delete removed an empty folder under us: try again.
                if attempt == _WRITE_ATTEMPTS - 1:
                    raise StorageError(f"{what}: folder kept disappearing while writing") from None
            except (NotADirectoryError, FileExistsError):
                raise StorageError(f"{what}: a parent of this key is an object, not a folder") from None
            except IsADirectoryError:
                raise StorageError(f"{what}: a folder of objects already has this key as prefix") from None
            except OSError as exc:
                raise StorageError(f"{what}: {exc.strerror or exc}") from None
            finally:
                for leftover in (tmp, tmp_meta):
                    if leftover is not None:
                        with contextlib.suppress(OSError):
                            os.unlink(leftover)

    # -- Store ---------------------------------------------------------------------------------

    def list(self, loc: Location) -> Iterator[ObjectInfo]:
        root = self._root(loc)
        self._emit("ListObjectsV2", root)
        entries = _walk(loc, root)
        entries.sort(key=lambda e: e[0])
        for n, (key, full, st) in enumerate(entries):
            if n and n % _LIST_PAGE == 0:
                self._emit("ListObjectsV2", root)
            sidecar = self._read_sidecar(full, st)
            md5 = sidecar.get("md5") if sidecar else None
            if not isinstance(md5, str):
                try:
                    md5 = _md5_of_file(full)
                except OSError:
                    continue  # deleted since the walk
            yield ObjectInfo(key=key, size=st.st_size, md5=md5)

    def get(self, loc: Location, key: str) -> bytes:
        path = self._path(loc, key)
        self._emit("GetObject", path)
        self._stat_file(path, loc, key)
        try:
            with open(path, "rb") as f:
                return f.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"{loc.url}{key}: no such object") from None
        except OSError as exc:
            raise StorageError(f"{loc.url}{key}: {exc.strerror}") from None

    def get_range(self, loc: Location, key: str, start: int, end: int) -> bytes:
        if start < 0 or end < start:
            raise ValueError(f"bad byte range {start}-{end}")
        path = self._path(loc, key)
        self._emit("GetObject", path)
        st = self._stat_file(path, loc, key)
        if start >= st.st_size:
            raise StorageError(f"{loc.url}{key}: range {start}-{end} not satisfiable (size {st.st_size})")
        try:
            with open(path, "rb") as f:
                f.seek(start)
                return f.read(end - start + 1)
        except FileNotFoundError:
            raise NotFound(f"{loc.url}{key}: no such object") from None
        except OSError as exc:
            raise StorageError(f"{loc.url}{key}: {exc.strerror}") from None

    def put(
        self,
        loc: Location,
        key: str,
        body: bytes,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        path = self._dest_path(loc, key)
        meta = check_metadata(metadata)
        self._emit("PutObject", path)

        def fill(f: IO[bytes]) -> str:
            f.write(body)
            return hashlib.md5(body, usedforsecurity=False).hexdigest()

        ctype = content_type or guess_content_type(key)
        self._write(path, fill, ctype, meta, f"{loc.url}{key}", encoding=guess_content_encoding(key))

    def copy(
        self,
        src: Location,
        src_key: str,
        dst: Location,
        dst_key: str,
        *,
        size: int,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        src_path = self._path(src, src_key)
        dst_path = self._dest_path(dst, dst_key)
        meta = None if metadata is None else check_metadata(metadata)
        self._emit("CopyObject", dst_path)
        st = self._stat_file(src_path, src, src_key)
        if content_type is None and meta is None:
            # S3's MetadataDirective COPY: keep the source's content type and metadata.
            sidecar = self._read_sidecar(src_path, st) or {}
            content_type = sidecar.get("content_type") or guess_content_type(src_key)
            encoding = sidecar.get("content_encoding") if sidecar else guess_content_encoding(src_key)
            meta = dict(sidecar.get("metadata") or {})
        else:
            content_type = content_type or guess_content_type(dst_key)
            encoding = guess_content_encoding(dst_key)
            meta = meta or {}

        def fill(f: IO[bytes]) -> str:
            digest = hashlib.md5(usedforsecurity=False)
            try:
                with open(src_path, "rb") as s:
                    while chunk := s.read(_CHUNK):
                        digest.update(chunk)
                        f.write(chunk)
            except (FileNotFoundError, IsADirectoryError):
                raise NotFound(f"{src.url}{src_key}: no such object") from None
            return digest.hexdigest()

        self._write(dst_path, fill, content_type, meta, f"{dst.url}{dst_key}", encoding=encoding)

    def delete(self, loc: Location, keys: Sequence[str]) -> None:
        root = self._root(loc)
        paths = [self._dest_path(loc, key) for key in keys]
        for i in range(0, len(paths), DELETE_BATCH):
            self._emit("DeleteObjects", "")
            folders: set[str] = set()
            for path in paths[i : i + DELETE_BATCH]:
                try:
                    os.unlink(path)
                except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                    continue  # a missing key is not an error (as on S3)
                except OSError as exc:
                    raise StorageError(
                        f"{loc.url}: cannot delete {path[len(root) :]!r}: {exc.strerror}"
                    ) from None
                with contextlib.suppress(OSError):
                    os.unlink(_sidecar_path(path))
                folders.add(os.path.dirname(path))
            for folder in sorted(folders, key=len, reverse=True):
                self._prune_empty(folder, root)

    @staticmethod
    def _prune_empty(folder: str, root: str) -> None:
        """Remove folders left empty by a delete, up to (not including) the location's folder.
        A concurrent put into one of them retries (see ``_write``)."""
        with contextlib.suppress(OSError):
            os.rmdir(os.path.join(folder, META_DIR))
        stop = root.rstrip("/")
        while folder.rstrip("/") != stop and folder.startswith(root):
            try:
                os.rmdir(folder)
            except OSError:
                return
            folder = os.path.dirname(folder)

    def head(self, loc: Location, key: str) -> ObjectInfo:
        path = self._path(loc, key)
        self._emit("HeadObject", path)
        st = self._stat_file(path, loc, key)
        sidecar = self._read_sidecar(path, st) or {}
        md5 = sidecar.get("md5")
        if not isinstance(md5, str):
            try:
                md5 = _md5_of_file(path)
            except OSError:
                raise NotFound(f"{loc.url}{key}: no such object") from None
        return ObjectInfo(
            key=key,
            size=st.st_size,
            md5=md5,
            metadata=dict(sidecar.get("metadata") or {}),
            content_type=sidecar.get("content_type") or guess_content_type(key),
            content_encoding=(
                sidecar.get("content_encoding") if "content_type" in sidecar else guess_content_encoding(key)
            ),
        )


def _walk(loc: Location, root: str) -> list[tuple[str, str, os.stat_result]]:
    """Every regular file below ``root``: ``(key, path, stat)`` sorted by key.

    A symlink is followed when it resolves inside the folder (a file or a folder; its key is the
    link's own path) and refused when it leads out of it, is broken or loops; anything that is
    not a regular file (FIFO, socket, device) is refused too. Refused means UnusableFile naming
    the entry and what to do: a file silently left out would make a site miss it.
    """
    real_root = os.path.realpath(root)
    inside = real_root.rstrip("/") + "/"
    out: list[tuple[str, str, os.stat_result]] = []

    def visit(folder: str, rel: str, ancestors: frozenset[str]) -> None:
        try:
            with os.scandir(folder) as it:
                names = sorted(e.name for e in it)
        except (FileNotFoundError, NotADirectoryError):
            return  # removed while we walked
        except OSError as exc:
            raise StorageError(f"{loc.url}{rel}: cannot list: {exc.strerror}") from None
        for name in names:
            if name == META_DIR:
                continue
            key = f"{rel}/{name}" if rel else name
            full = os.path.join(folder, name)
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                continue  # deleted while we walked
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(full)
                real = os.path.realpath(full)
                if real != real_root and not real.startswith(inside):
                    raise UnusableFile(
                        f"{loc.url}{key} is a symlink to {target!r}, outside {loc.url}: copy the file "
                        "into the folder, or make the link point inside it"
                    )
                try:
                    st = os.stat(full)
                except OSError:
                    raise UnusableFile(
                        f"{loc.url}{key} is a symlink to {target!r}, which does not exist (or loops): "
                        "fix or remove the link"
                    ) from None
                if stat.S_ISDIR(st.st_mode) and (real in ancestors or real == real_root):
                    raise UnusableFile(
                        f"{loc.url}{key} is a symlink to {target!r}, a folder that contains it (a loop): "
                        "remove the link"
                    )
            if stat.S_ISDIR(st.st_mode):
                visit(full, key, ancestors | {os.path.realpath(full)})
            elif stat.S_ISREG(st.st_mode):
                out.append((key, full, st))
            else:
                raise UnusableFile(
                    f"{loc.url}{key} is {_kind(st.st_mode)}, not a regular file: only files (and "
                    "symlinks to files inside the folder) can be released; remove it"
                )

    visit(root.rstrip("/") or "/", "", frozenset({real_root}))
    return out


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def first_link(root: str, parts: Sequence[str]) -> tuple[str, str] | None:
    """The first of ``root/parts[0]``, ``root/parts[0]/parts[1]``… that is a symlink, as
    ``(relative path, link target)``, or None (a missing component ends the search)."""
    path = root.rstrip("/")
    for n, part in enumerate(parts):
        path = f"{path}/{part}"
        try:
            if not stat.S_ISLNK(os.lstat(path).st_mode):
                continue
            return "/".join(parts[: n + 1]), os.readlink(path)
        except OSError:
            return None
    return None


def real_file_url(url: str) -> str:
    """``url`` (an absolute ``file://`` location, object or template) with the folder of its fixed
    part resolved through symlinks, so that two spellings of one folder compare equal; unchanged
    when nothing in it is a symlink, and for any other URL."""
    if not url.startswith(("file:///", "file://localhost/")):
        return url
    rest = url[len("file://") :]
    if rest.startswith("localhost/"):
        rest = rest[len("localhost") :]
    cut = rest.find("{")
    fixed = rest if cut < 0 else rest[:cut]
    slash = fixed.rfind("/")
    folder, tail = unquote(fixed[: slash + 1]), rest[slash + 1 :]
    real = os.path.realpath(folder)
    if real.rstrip("/") == posixpath.normpath(folder).rstrip("/"):
        return url
    # a folder name that is not UTF-8 (surrogate-escaped by os) is quoted byte for byte
    return "file://" + quote(real.rstrip("/") + "/", safe="/", errors="surrogateescape") + tail
