import json
import multiprocessing
import pickle
import zlib

import h5py
import numpy as np
import pytest

from nvrloader import archive as archive_module
from nvrloader.archive import VERSION, Archive, ArchiveError, ArchiveWriter, decode_meta, open_archive

# A raw archive of no videos: valid meta (checked on open) whose payloads are whatever a test needs.
META = {"videos": [], "classes": ["a"], "fps": 2.0, "height": 4, "width": 5, "codec": "raw", "codec_config": {}}


def _write(path, **payloads):
    with ArchiveWriter(path, codec="raw") as writer:
        writer.set_meta(META)
        for key, data in payloads.items():
            group, name = key.split("__")
            writer.put(group, name, data)
    return path


@pytest.fixture
def archive_path(tmp_path):
    rng = np.random.default_rng(0)
    return _write(tmp_path / "a.nvr",
                  model__weights=rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(),
                  model__empty=b"",
                  streams__frames=rng.integers(0, 256, (6, 4, 5, 3), dtype=np.uint8),
                  streams__table=rng.normal(size=(7, 3)).astype(np.float32))


def _flip_byte(path, offset):
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)[0]
        fh.seek(offset)
        fh.write(bytes([byte ^ 0x10]))


def _data_offset(path, group, name):
    with h5py.File(path, "r") as f:
        return f[group][name].id.get_offset()


def _edit(path, change):
    """Change an archive with h5py, then re-seal it as the writer would, to reach the schema checks
    behind the structure checksum (h5py truncates the file to its HDF5 end, dropping the trailer)."""
    with h5py.File(path, "r+") as f:
        change(f)
    archive_module._seal(path)


def test_round_trip(archive_path):
    rng = np.random.default_rng(0)
    weights = rng.integers(0, 256, 5000, dtype=np.uint8).tobytes()
    frames = rng.integers(0, 256, (6, 4, 5, 3), dtype=np.uint8)
    table = rng.normal(size=(7, 3)).astype(np.float32)
    with open_archive(archive_path) as archive:
        assert archive.codec == "raw" and archive.version == VERSION and archive.meta == META
        assert archive.groups() == ["model", "streams"]
        assert archive.get("model", "weights") == weights
        assert archive.get("model", "empty") == b""
        got = archive.get("streams", "frames")
        assert got.dtype == np.uint8 and np.array_equal(got, frames)
        assert np.array_equal(archive.get("streams", "table"), table)


def test_payload_bytes(archive_path):
    with h5py.File(archive_path, "r") as f:
        meta_bytes = f["meta"].size
        assert decode_meta(f["meta"][()].tobytes()) == META
    with open_archive(archive_path) as archive:
        sizes = archive.payload_bytes()
    assert sizes == {"meta": meta_bytes, "model": 5000, "streams": 6 * 4 * 5 * 3 + 7 * 3 * 4}


def test_flipped_payload_byte_names_the_payload(archive_path):
    _flip_byte(archive_path, _data_offset(archive_path, "model", "weights") + 1234)
    archive = open_archive(archive_path)  # the schema is intact; payloads are checked lazily
    assert archive.get("streams", "table").shape == (7, 3)
    with pytest.raises(ArchiveError, match=r"checksum mismatch in payload model/weights"):
        archive.get("model", "weights")


def test_flipped_meta_byte(archive_path):
    with h5py.File(archive_path, "r") as f:
        offset = f["meta"].id.get_offset() + 3
    _flip_byte(archive_path, offset)
    with pytest.raises(ArchiveError, match="structure checksum mismatch"):
        open_archive(archive_path)


def test_meta_checksum_behind_the_structure_checksum(archive_path):
    _edit(archive_path, lambda f: f["meta"].write_direct(np.frombuffer(b"{", np.uint8), dest_sel=np.s_[1:2]))
    with pytest.raises(ArchiveError, match="checksum mismatch in 'meta'"):
        open_archive(archive_path)


def test_any_flip_outside_payload_data_is_caught_on_open(archive_path):
    """Includes HDF5's own structures, where a flipped byte can make the library loop forever."""
    with h5py.File(archive_path, "r") as f:
        spans = [(d.id.get_offset(), d.id.get_storage_size()) for g in ("model", "streams") for d in f[g].values()
                 if d.id.get_offset() is not None]
    clean = archive_path.read_bytes()
    outside = np.ones(len(clean), bool)
    for offset, length in spans:
        outside[offset:offset + length] = False
    candidates = np.flatnonzero(outside)
    for offset in np.random.default_rng(0).choice(candidates, 150, replace=False):
        archive_path.write_bytes(clean)
        _flip_byte(archive_path, int(offset))
        with pytest.raises(ArchiveError):
            open_archive(archive_path).payload_bytes()


@pytest.mark.parametrize("keep", [0.0, 0.05, 0.5, 0.999])
def test_truncated_file(archive_path, keep):
    data = archive_path.read_bytes()
    archive_path.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(ArchiveError, match=str(archive_path.name)):
        open_archive(archive_path)


def test_non_hdf5_file(tmp_path):
    path = tmp_path / "notes.nvr"
    path.write_text("just some text, not an archive\n" * 50)
    with pytest.raises(ArchiveError, match="not an HDF5 file"):
        open_archive(path)


def test_foreign_hdf5(tmp_path):
    path = tmp_path / "frames.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("frames", data=np.zeros((2, 3), np.uint8))
    with pytest.raises(ArchiveError, match=r"not an nvr archive.*frames"):
        open_archive(path)


def test_newer_version_and_missing_checksum(archive_path):
    _edit(archive_path, lambda f: f.attrs.__setitem__("version", VERSION + 1))
    with pytest.raises(ArchiveError, match=f"version {VERSION + 1} is not supported"):
        open_archive(archive_path)

    def drop_checksum(f):
        f.attrs["version"] = VERSION
        del f["streams"]["table"].attrs["sha256"]

    _edit(archive_path, drop_checksum)
    with pytest.raises(ArchiveError, match="streams/table' has no sha256"):
        open_archive(archive_path)


def test_invalid_payload_attributes_named_on_read(archive_path):
    _edit(archive_path, lambda f: f["model"]["weights"].attrs.__setitem__("kind", "pickle"))
    archive = open_archive(archive_path)
    with pytest.raises(ArchiveError, match="'model/weights' has no valid 'kind'"):
        archive.get("model", "weights")


def test_missing_file(tmp_path):
    with pytest.raises(ArchiveError, match=r"missing\.nvr: archive not found"):
        open_archive(tmp_path / "missing.nvr")


def test_writer_exception_leaves_nothing(tmp_path):
    path = tmp_path / "out.nvr"
    with pytest.raises(RuntimeError, match="encoder failed"):
        with ArchiveWriter(path, codec="raw") as writer:
            writer.set_meta(META)
            writer.put("model", "w", b"abc")
            raise RuntimeError("encoder failed")
    assert list(tmp_path.iterdir()) == []


def test_failed_rewrite_keeps_previous_archive(archive_path):
    with pytest.raises(ArchiveError, match="set_meta"):
        with ArchiveWriter(archive_path, codec="h264") as writer:
            writer.put("streams", "v0", b"xyz")
    assert open_archive(archive_path).codec == "raw"
    assert not archive_path.with_name(archive_path.name + ".tmp").exists()


def test_writer_rejects_misuse(tmp_path):
    with ArchiveWriter(tmp_path / "a.nvr", codec="raw") as writer:
        writer.set_meta(META)
        writer.put("model", "w", b"1")
        with pytest.raises(ArchiveError, match="written twice"):
            writer.put("model", "w", b"2")
        with pytest.raises(ArchiveError, match="reserved"):
            writer.put("meta", "x", b"2")
        with pytest.raises(ArchiveError, match="only bool, integer and float"):
            writer.put("model", "s", np.array(["a"]))
        with pytest.raises(ArchiveError, match="JSON"):
            writer.set_meta({"x": object()})


def _read_in_child(archive, queue):
    queue.put(archive.get("model", "weights")[:10])


def test_pickles_by_path_and_survives_fork(archive_path):
    archive = open_archive(archive_path)
    expected = archive.get("model", "weights")[:10]
    clone = pickle.loads(pickle.dumps(archive))
    assert isinstance(clone, Archive) and clone.get("model", "weights")[:10] == expected
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_read_in_child, args=(archive, queue))
    child.start()
    assert queue.get(timeout=30) == expected
    child.join(timeout=30)
    assert child.exitcode == 0
    assert archive.get("streams", "table").shape == (7, 3)  # parent handle still fine


class _Panic(BaseException):
    """Stands in for pyo3's PanicException, which derives from BaseException."""


@pytest.mark.parametrize("error", [MemoryError("Unable to allocate 1.28 TiB"), _Panic("capacity overflow"),
                                   SyntaxError("not a PostScript file"), IndexError("index 2 is out of bounds"),
                                   ZeroDivisionError("division by zero")])
def test_decoding_turns_any_failure_into_archive_error(archive_path, error):
    archive = open_archive(archive_path)
    with pytest.raises(ArchiveError, match=rf"a\.nvr: cannot decode payload keyframes/000012: "
                                          rf"{type(error).__name__}: {error}"):
        with archive.decoding("keyframes/000012"):
            raise error


def test_decoding_lets_interrupts_and_archive_errors_through(archive_path):
    archive = open_archive(archive_path)
    for error in (KeyboardInterrupt(), SystemExit(1), ArchiveError("already named")):
        with pytest.raises(type(error)):
            with archive.decoding("model/weights"):
                raise error
    with archive.decoding("model/weights"):
        pass  # nothing raised, nothing changed


def test_meta_is_validated_on_open(archive_path):
    def set_meta(meta):
        _set_stored_meta(archive_path, archive_module.pack_meta(json.dumps(meta).encode()))

    set_meta({**META, "videos": [{"name": "v0", "label": 0, "split": "train", "num_frames": 6}]})
    with pytest.raises(ArchiveError, match=r"invalid archive meta: payload frames/000000 is missing"):
        open_archive(archive_path)
    set_meta({**META, "fps": -2.0})
    with pytest.raises(ArchiveError, match=r"invalid archive meta: meta\.fps"):
        open_archive(archive_path)
    set_meta([1, 2])
    with pytest.raises(ArchiveError, match=r"invalid archive meta: meta: expected an object"):
        open_archive(archive_path)


# -- compressed meta -------------------------------------------------------------------------------
def _set_stored_meta(path, stored: bytes) -> None:
    """Replace the stored meta bytes (with a matching checksum) and re-seal, to reach the meta decoding."""
    def change(f):
        del f["meta"]
        f.create_dataset("meta", data=np.frombuffer(stored, np.uint8)).attrs["sha256"] = \
            archive_module.hashlib.sha256(stored).hexdigest()
    _edit(path, change)


def test_meta_round_trips_compressed():
    videos = [{"name": f"v_Class{i % 6}_g{i // 24 + 1:02d}_c{i % 4 + 1:02d}", "class_name": f"Class{i % 6}",
               "label": i % 6, "split": "train" if i % 3 else "test", "group": i // 24 + 1, "num_frames": 10 + i % 7}
              for i in range(200)]
    meta = {**META, "classes": [f"Class{i}" for i in range(6)], "videos": videos}
    stored = archive_module.encode_meta(meta)
    assert decode_meta(stored) == meta
    assert len(stored) < len(json.dumps(meta)) / 8          # 200 videos: ~30 KB of JSON
    assert archive_module.encode_meta(dict(reversed(meta.items()))) == stored   # sorted: one byte string per meta


def test_meta_inflating_past_the_bound_is_refused(archive_path, monkeypatch):
    padded = archive_module.pack_meta(json.dumps(META).encode() + b" " * 100_000)   # valid JSON, 100 KB
    _set_stored_meta(archive_path, padded)
    assert open_archive(archive_path).meta == META
    monkeypatch.setattr(archive_module, "MAX_META_BYTES", 4096)
    with pytest.raises(ArchiveError, match="invalid archive meta: meta inflates to more than 4096 bytes"):
        open_archive(archive_path)


@pytest.mark.slow
def test_meta_bomb_is_refused_at_the_real_bound(archive_path):
    deflate = zlib.compressobj(9)
    bomb = b"".join(deflate.compress(b" " * (1 << 20)) for _ in range(archive_module.MAX_META_BYTES >> 20 | 1))
    _set_stored_meta(archive_path, bomb + deflate.flush())   # ~260 KB stored
    with pytest.raises(ArchiveError, match="meta inflates to more than"):
        open_archive(archive_path)


@pytest.mark.parametrize("damage, message", [
    (lambda stored: stored[:-4], "not one complete zlib stream"),
    (lambda stored: stored + b"\x00", "not one complete zlib stream"),
    (lambda stored: json.dumps(META).encode(), "not zlib-compressed"),           # a version-1 meta
    (lambda stored: zlib.compress(b"\xff\xfe{}"), "not valid UTF-8 JSON"),
    (lambda stored: zlib.compress(b'{"videos": ['), "not valid UTF-8 JSON"),
])
def test_damaged_compressed_meta_is_refused(archive_path, damage, message):
    with h5py.File(archive_path, "r") as f:
        stored = f["meta"][()].tobytes()
    _set_stored_meta(archive_path, damage(stored))
    with pytest.raises(ArchiveError, match=f"invalid archive meta: .*{message}"):
        open_archive(archive_path)


def test_version_1_archive_with_plain_json_meta_still_opens(archive_path):
    _edit(archive_path, lambda f: f.attrs.__setitem__("version", 1))
    _set_stored_meta(archive_path, json.dumps(META).encode())
    with open_archive(archive_path) as archive:
        assert archive.version == 1 and archive.meta == META
        assert archive.get("streams", "table").shape == (7, 3)
