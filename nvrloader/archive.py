"""The .nvr archive: one HDF5 file holding everything a decoder needs, and nothing executable.

Layout::

    /                  attrs: format="nvr", version=2, codec=<codec name>
    /meta              uint8 [N]  zlib-compressed UTF-8 JSON (videos, labels, classes, ...); attrs: sha256
    /<group>/<name>    payloads; attrs: sha256, kind ("bytes" | "array")

The meta is compressed because per-video names, classes and frame counts are repetitive and count
towards bpp (72 videos: 9.2 KB of JSON, 0.8 KB compressed); reading inflates at most
``MAX_META_BYTES``, so a small forged meta cannot expand without bound. Version 1 archives (plain
JSON meta, H.264/H.265 in Matroska) still open; their streams are refused by the stream decoder.

A payload is either opaque bytes (stored as a 1-D uint8 dataset, returned as ``bytes``) or a
numeric array (stored with its dtype and shape, returned as ``np.ndarray``). Every dataset carries
the sha256 of its little-endian bytes; it is checked on the first read of that payload in a
process (verifying a large payload once, not on every clip read). Opening checks the root
attributes, the meta checksum and that every payload is a dataset with ``kind`` and ``sha256``
attributes; each payload's attribute values and layout are checked on its first read, so opening
stays cheap however many payloads there are.

After the HDF5 part comes an integrity trailer: the sha256 of every byte that is not payload
data (superblock, object headers, heaps, attributes, meta) plus the payload extents it skipped.
It is checked before HDF5 parses anything, because a flipped byte in HDF5's own structures can
make the library loop forever; payload data stays covered by the lazy per-payload checksums.
The trailer is invisible to HDF5 tools, which ignore bytes past the file's end of address space.

An archive is untrusted input. Opening also validates the JSON meta against
:mod:`nvrloader.meta_schema` (types, ranges, agreement between fields and with the payloads a codec
needs), and decoders wrap their work on a payload in :meth:`Archive.decoding`, so whatever a forged
payload makes a library raise reaches the caller as one :class:`ArchiveError` naming the payload.

Archives are written to ``<path>.tmp`` and renamed when complete, so a reader never sees a partial
file. Nothing is ever unpickled: payloads are plain bytes/arrays and meta is JSON.

h5py handles must not cross a ``fork``: an :class:`Archive` re-opens its file the first time it
is used in a new process, and pickles as its path, so DataLoader workers (fork or spawn) each get
their own handle.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import zlib
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Iterator

import h5py
import numpy as np

from nvrloader.meta_schema import MAX_META_BYTES, MetaError, PayloadIndex, validate_meta

FORMAT = "nvr"
VERSION = 2          # 2: zlib-compressed meta, bare H.264/H.265 streams
READABLE = (1, 2)    # 1: plain JSON meta, H.264/H.265 in Matroska (the stream decoder refuses those)
META = "meta"
_KINDS = ("bytes", "array")
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
_HASH_BLOCK = 1 << 24  # bytes hashed per read when verifying a large array
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_TRAILER_MAGIC = b"NVRTRAIL"
_TRAILER_END = struct.Struct("<QQ8s")  # HDF5 part size, number of payload extents, magic


class ArchiveError(Exception):
    """A missing, truncated, tampered or foreign archive, or a misuse of the writer."""


def _check_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ArchiveError(f"invalid {kind} name {name!r}: use letters, digits, '_', '-', '.'")


def _little_endian(arr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))


def _sha256_dataset(dset: h5py.Dataset) -> str:
    """Hash a dataset's little-endian bytes, in blocks so a large payload never sits in memory twice."""
    digest = hashlib.sha256()
    if dset.shape is None or dset.size == 0:
        return digest.hexdigest()
    if dset.ndim == 0:
        digest.update(_little_endian(np.asarray(dset[()])).tobytes())
        return digest.hexdigest()
    row_bytes = max(1, dset.size // dset.shape[0]) * dset.dtype.itemsize
    step = max(1, _HASH_BLOCK // row_bytes)
    for start in range(0, dset.shape[0], step):
        digest.update(_little_endian(dset[start:start + step]).tobytes())
    return digest.hexdigest()


def pack_meta(text: bytes) -> bytes:
    """UTF-8 JSON text as the archive stores it."""
    return zlib.compress(text, 9)


def encode_meta(meta: dict) -> bytes:
    """The meta exactly as an archive stores (and counts) it, so a rate budget can measure it."""
    return pack_meta(json.dumps(meta, allow_nan=False, sort_keys=True, separators=(",", ":")).encode("utf-8"))


def decode_meta(stored: bytes, version: int = VERSION) -> Any:
    """The JSON value of a stored meta; inflates at most MAX_META_BYTES (no zip bomb). Raises MetaError."""
    text = stored
    if version >= 2:
        inflater = zlib.decompressobj()
        try:
            text = inflater.decompress(stored, MAX_META_BYTES + 1)
        except zlib.error as exc:
            raise MetaError(f"meta is not zlib-compressed ({exc})") from None
        if len(text) > MAX_META_BYTES:
            raise MetaError(f"meta inflates to more than {MAX_META_BYTES} bytes")
        if not inflater.eof or inflater.unused_data:
            raise MetaError("meta is not one complete zlib stream (truncated or followed by other bytes)")
    try:
        return json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MetaError(f"meta is not valid UTF-8 JSON: {exc}") from None


class ArchiveWriter:
    """Writes an archive atomically: to ``<path>.tmp``, renamed onto ``path`` on a clean exit."""

    def __init__(self, path: str | os.PathLike, codec: str):
        self.path = Path(path)
        self.tmp_path = Path(f"{self.path}.tmp")
        if not isinstance(codec, str) or not codec:
            raise ArchiveError(f"{self.path}: codec must be a non-empty string, got {codec!r}")
        self.codec = codec
        self._meta: bytes | None = None
        self._file: h5py.File | None = None

    def __enter__(self) -> "ArchiveWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._file = h5py.File(self.tmp_path, "w", track_order=True, libver=("v110", "v110"))
        except OSError as exc:
            raise ArchiveError(f"{self.tmp_path}: cannot create archive: {exc}") from None
        self._file.attrs["format"] = FORMAT
        self._file.attrs["version"] = VERSION
        self._file.attrs["codec"] = self.codec
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            self._abort()
            return
        try:
            self._commit()
        except BaseException:
            self._abort()
            raise

    def set_meta(self, meta: dict) -> None:
        """Set (or replace) the JSON meta; written when the archive is committed."""
        if not isinstance(meta, dict):
            raise ArchiveError(f"{self.path}: meta must be a dict, got {type(meta).__name__}")
        try:
            self._meta = encode_meta(meta)
        except (TypeError, ValueError) as exc:
            raise ArchiveError(f"{self.path}: meta is not JSON-serialisable: {exc}") from None

    def put(self, group: str, name: str, data: bytes | np.ndarray) -> None:
        """Store one payload with its checksum; bytes stay bytes, numeric arrays keep dtype and shape."""
        file = self._open_file()
        _check_name("group", group)
        _check_name("payload", name)
        if group == META:
            raise ArchiveError(f"{self.path}: {META!r} is reserved; use set_meta()")
        if isinstance(data, (bytes, bytearray, memoryview)):
            kind, arr = "bytes", np.frombuffer(bytes(data), dtype=np.uint8)
        elif isinstance(data, np.ndarray):
            if data.dtype.kind not in "biuf":
                raise ArchiveError(f"{self.path}: payload {group}/{name} has dtype {data.dtype}; "
                                   "only bool, integer and float arrays can be stored")
            kind, arr = "array", _little_endian(data)
        else:
            raise ArchiveError(f"{self.path}: payload {group}/{name} must be bytes or a numpy array, "
                               f"got {type(data).__name__}")
        grp = file[group] if group in file else file.create_group(group, track_order=True)
        if name in grp:
            raise ArchiveError(f"{self.path}: payload {group}/{name} was written twice")
        dset = grp.create_dataset(name, data=arr)
        dset.attrs["kind"] = kind
        dset.attrs["sha256"] = hashlib.sha256(arr.tobytes()).hexdigest()

    def _open_file(self) -> h5py.File:
        if self._file is None:
            raise ArchiveError(f"{self.path}: ArchiveWriter must be used as a context manager (with ...)")
        return self._file

    def _commit(self) -> None:
        file = self._open_file()
        if self._meta is None:
            raise ArchiveError(f"{self.path}: set_meta() was never called; nothing written")
        dset = file.create_dataset(META, data=np.frombuffer(self._meta, dtype=np.uint8))
        dset.attrs["sha256"] = hashlib.sha256(self._meta).hexdigest()
        file.close()
        self._file = None
        _seal(self.tmp_path)
        os.replace(self.tmp_path, self.path)

    def _abort(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            finally:
                self._file = None
        self.tmp_path.unlink(missing_ok=True)


class Archive:
    """Read side: validates the schema on open, checks each payload's checksum on its first read."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._file: h5py.File | None = None
        self._pid: int | None = None
        self._verified: set[tuple[str, str]] = set()
        self._kinds: dict[tuple[str, str], str] = {}
        intact = self._check_integrity()
        self.codec, self.version, self.meta = self._validate(intact)

    # -- process-safe handle -------------------------------------------------------------------
    def _handle(self) -> h5py.File:
        """The h5py file of this process, (re)opened after a fork or unpickling."""
        if self._file is None or self._pid != os.getpid():
            self._file = None  # an inherited handle belongs to the parent; never touch it here
            if not self.path.exists():
                raise ArchiveError(f"{self.path}: archive not found")
            try:
                self._file = h5py.File(self.path, "r", locking=False)
            except Exception as exc:  # noqa: BLE001 - h5py raises OSError/ValueError/RuntimeError
                raise ArchiveError(f"{self.path}: not a readable HDF5 file "
                                   f"(truncated, corrupted or not an archive): {exc}") from None
            self._pid = os.getpid()
        return self._file

    def __getstate__(self) -> dict[str, Any]:
        return {"path": str(self.path), "verified": sorted(self._verified)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])
        self._verified = {tuple(key) for key in state["verified"]}

    # -- validation ----------------------------------------------------------------------------
    def _check_integrity(self) -> bool:
        """Check the trailer's digest of everything but payload data *before* HDF5 parses the file:
        damaged HDF5 structures can send the library into an endless loop. False if there is no
        trailer at all (a foreign or truncated file, told apart by :meth:`_check_schema`)."""
        if not self.path.exists():
            raise ArchiveError(f"{self.path}: archive not found")
        with open(self.path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            if fh.seek(0) != 0 or fh.read(len(_HDF5_SIGNATURE)) != _HDF5_SIGNATURE:
                raise ArchiveError(f"{self.path}: not an HDF5 file, so not an nvr archive")
            if size < _TRAILER_END.size:
                return False
            fh.seek(size - _TRAILER_END.size)
            hdf5_size, count, magic = _TRAILER_END.unpack(fh.read(_TRAILER_END.size))
            if magic != _TRAILER_MAGIC:
                return False
            if hdf5_size + 16 * count + 32 + _TRAILER_END.size != size:
                raise ArchiveError(f"{self.path}: file size does not match its trailer (truncated or corrupted)")
            fh.seek(hdf5_size)
            extents = np.frombuffer(fh.read(16 * count), dtype="<u8").reshape(-1, 2)
            stored = fh.read(32)
            ends = extents[:, 0] + extents[:, 1]
            if count and (np.any(extents[1:, 0] < ends[:-1]) or ends[-1] > hdf5_size):
                raise ArchiveError(f"{self.path}: trailer lists invalid payload extents (corrupted)")
            if _structure_digest(fh, hdf5_size, extents) != stored:
                raise ArchiveError(f"{self.path}: structure checksum mismatch (file tampered or corrupted)")
        return True

    def _validate(self, intact: bool) -> tuple[str, int, dict]:
        file = self._handle()
        try:
            return self._check_schema(file, intact)
        except ArchiveError:
            self._close_handle()
            raise
        except Exception as exc:  # noqa: BLE001 - corrupted metadata surfaces as many h5py types
            self._close_handle()
            raise ArchiveError(f"{self.path}: corrupted archive: {exc}") from None

    def _check_schema(self, file: h5py.File, intact: bool) -> tuple[str, int, dict]:
        attrs = file.attrs
        fmt = attrs.get("format")
        if fmt == FORMAT and not intact:
            raise ArchiveError(f"{self.path}: integrity trailer missing or damaged (truncated or tampered)")
        if fmt != FORMAT:
            found = ", ".join(sorted(file.keys())) or "nothing"
            raise ArchiveError(f"{self.path}: not an nvr archive (format attribute {fmt!r}, "
                               f"expected {FORMAT!r}; top-level entries: {found})")
        version = attrs.get("version")
        if not isinstance(version, (int, np.integer)):
            raise ArchiveError(f"{self.path}: missing or invalid 'version' attribute ({version!r})")
        if int(version) not in READABLE:
            raise ArchiveError(f"{self.path}: archive version {int(version)} is not supported "
                               f"(this nvrloader reads versions {READABLE[0]} to {READABLE[-1]})")
        codec = attrs.get("codec")
        if not isinstance(codec, str) or not codec:
            raise ArchiveError(f"{self.path}: missing or invalid 'codec' attribute ({codec!r})")
        index: dict[str, dict[str, tuple[tuple[int, ...], np.dtype | None]]] = {}
        for key, item in file.items():
            if key == META:
                continue
            if not isinstance(item, h5py.Group):
                raise ArchiveError(f"{self.path}: unexpected top-level dataset {key!r}")
            index[key] = _check_members(self.path, key, item)
        if META not in file or not isinstance(file[META], h5py.Dataset):
            raise ArchiveError(f"{self.path}: required dataset {META!r} is missing")
        meta_dset = file[META]
        if meta_dset.dtype != np.uint8 or meta_dset.ndim != 1:
            raise ArchiveError(f"{self.path}: {META!r} must be a 1-D uint8 dataset")
        raw = meta_dset[()].tobytes()
        if hashlib.sha256(raw).hexdigest() != meta_dset.attrs.get("sha256"):
            raise ArchiveError(f"{self.path}: checksum mismatch in {META!r} (file tampered or corrupted)")
        try:
            meta = decode_meta(raw, int(version))
            validate_meta(meta, codec, index)
        except MetaError as err:
            raise ArchiveError(f"{self.path}: invalid archive meta: {err}") from None
        return codec, int(version), meta

    def _kind(self, key: tuple[str, str], item: h5py.Dataset) -> str:
        """A payload's kind, after checking its attributes and layout (once per payload per process)."""
        if key in self._kinds:
            return self._kinds[key]
        label = "/".join(key)
        kind, digest = item.attrs.get("kind"), item.attrs.get("sha256")
        if kind not in _KINDS:
            raise ArchiveError(f"{self.path}: payload {label!r} has no valid 'kind' attribute ({kind!r})")
        if not isinstance(digest, str) or len(digest) != 64:
            raise ArchiveError(f"{self.path}: payload {label!r} has no valid sha256 checksum")
        if item.dtype.kind not in "biuf" or (kind == "bytes" and (item.dtype != np.uint8 or item.ndim != 1)):
            raise ArchiveError(f"{self.path}: payload {label!r} has an invalid layout "
                               f"({kind}, {item.dtype}, shape {item.shape})")
        self._kinds[key] = kind
        return kind

    # -- reading -------------------------------------------------------------------------------
    @contextmanager
    def _failing_as(self, problem: str) -> Iterator[None]:
        """Re-raise any failure but ArchiveError, KeyboardInterrupt and SystemExit as an ArchiveError
        naming the file and ``problem``: damaged or forged data surfaces as many types, some of them
        BaseExceptions (pyo3's PanicException from constriction), and numpy's MemoryError."""
        failure = None
        try:
            yield
        except (ArchiveError, KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - see above
            failure = f"{self.path}: {problem}: {type(exc).__name__}: {exc}"
        if failure is not None:  # raised here, so the failed frames (and their memory) are already freed
            raise ArchiveError(failure)

    def _reading(self, what: str) -> AbstractContextManager[None]:
        """Turn whatever h5py raises on damaged data (OSError, KeyError, ...) into one ArchiveError."""
        return self._failing_as(f"cannot read {what}")

    def decoding(self, payload: str) -> AbstractContextManager[None]:
        """Context manager for a decoder working on ``payload`` (e.g. "keyframes/000012"): any failure
        inside becomes an ArchiveError naming the archive and the payload."""
        return self._failing_as(f"cannot decode payload {payload}")

    def groups(self) -> list[str]:
        """Payload groups present, in the order they were written."""
        with self._reading("the group list"):
            return [key for key in self._handle().keys() if key != META]

    def get(self, group: str, name: str) -> bytes | np.ndarray:
        """One payload: ``bytes`` or an array, its checksum checked on the first read."""
        key = (group, name)
        with self._reading(f"payload {group}/{name}"):
            dset = self._dataset(group, name)
            kind = self._kind(key, dset)
            if key not in self._verified:
                if _sha256_dataset(dset) != dset.attrs["sha256"]:
                    raise ArchiveError(f"{self.path}: checksum mismatch in payload {group}/{name} "
                                       "(file tampered or corrupted)")
                self._verified.add(key)
            return dset[()].tobytes() if kind == "bytes" else dset[()]

    def _dataset(self, group: str, name: str) -> h5py.Dataset:
        file = self._handle()
        if group == META or group not in file or name not in file[group]:
            raise ArchiveError(f"{self.path}: no payload {group}/{name} (groups: {', '.join(self.groups())})")
        return file[group][name]

    def payload_bytes(self) -> dict[str, int]:
        """Bytes per group of everything a decoder needs (payload data plus the stored meta)."""
        with self._reading("payload sizes"):
            file = self._handle()
            sizes = {META: int(file[META].size)}
            for group in self.groups():
                gid = file[group].id
                sizes[group] = sum(_nbytes(h5py.h5o.open(gid, name.encode())) for name in file[group])
            return sizes

    # -- lifetime ------------------------------------------------------------------------------
    def _close_handle(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def close(self) -> None:
        self._close_handle()

    def __enter__(self) -> "Archive":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Archive({str(self.path)!r}, codec={self.codec!r}, version={self.version})"


def _seal(path: Path) -> None:
    """Append the integrity trailer to a closed HDF5 file (which must not carry one yet) and fsync it."""
    extents = _payload_extents(path)
    with open(path, "r+b") as fh:
        hdf5_size = fh.seek(0, os.SEEK_END)
        digest = _structure_digest(fh, hdf5_size, extents)
        fh.write(extents.tobytes() + digest + _TRAILER_END.pack(hdf5_size, len(extents), _TRAILER_MAGIC))
        fh.flush()
        os.fsync(fh.fileno())


def _payload_extents(path: Path) -> np.ndarray:
    """(offset, length) of every payload's data in the file, sorted: the bytes payload checksums cover."""
    extents = []
    with h5py.File(path, "r", locking=False) as file:
        for group in file:
            if group == META:
                continue
            gid = file[group].id
            for name in file[group]:
                dataset_id = h5py.h5o.open(gid, name.encode())
                offset, length = dataset_id.get_offset(), dataset_id.get_storage_size()
                if offset is not None and length:
                    extents.append((offset, length))
    return np.array(sorted(extents), dtype="<u8").reshape(-1, 2)


def _structure_digest(fh: BinaryIO, hdf5_size: int, extents: np.ndarray) -> bytes:
    """sha256 of every byte before ``hdf5_size`` outside the payload extents, and of the extents."""
    digest = hashlib.sha256()
    position = 0
    for offset, length in extents.tolist() + [(hdf5_size, 0)]:
        fh.seek(position)
        remaining = offset - position
        while remaining > 0:
            chunk = fh.read(min(remaining, _HASH_BLOCK))
            if not chunk:
                raise ArchiveError(f"{fh.name}: file ends inside its own structure (truncated)")
            digest.update(chunk)
            remaining -= len(chunk)
        position = offset + length
    digest.update(extents.tobytes())
    digest.update(struct.pack("<Q", hdf5_size))
    return digest.digest()


def _check_members(path: Path, group: str, item: h5py.Group) -> dict[str, tuple[tuple[int, ...], np.dtype | None]]:
    """Every member of a payload group is a dataset carrying 'kind' and 'sha256' attributes; returns
    each one's shape and, if multi-dimensional, dtype, for checking the meta against the payloads
    (a 1-D payload's dtype is checked with its kind on first read).

    Uses h5py's low-level calls: an archive of 13k per-video streams opens in about a second
    instead of several. The attribute values and layout are checked on each payload's first read.
    """
    gid = item.id
    layouts = {}
    for name in item:
        oid = h5py.h5o.open(gid, name.encode())
        if h5py.h5i.get_type(oid) != h5py.h5i.DATASET:
            raise ArchiveError(f"{path}: unexpected nested group '{group}/{name}'")
        for attr in (b"kind", b"sha256"):
            if not h5py.h5a.exists(oid, attr):
                raise ArchiveError(f"{path}: payload '{group}/{name}' has no {attr.decode()} attribute"
                                   + (" (no checksum)" if attr == b"sha256" else ""))
        shape = tuple(oid.shape or ())
        layouts[name] = (shape, oid.dtype if len(shape) > 1 else None)  # the dtype costs a third of the time
    return layouts


def _nbytes(dataset_id: h5py.h5d.DatasetID) -> int:
    return int(dataset_id.get_space().get_simple_extent_npoints()) * dataset_id.get_type().get_size()


def open_archive(path: str | os.PathLike) -> Archive:
    """Open and validate an archive; raises :class:`ArchiveError` with the file and problem."""
    return Archive(path)
