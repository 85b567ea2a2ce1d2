"""Hostile archives for the tests: tiny archives of each kind, seeded mutations (most re-sealed so
the integrity checks pass), and a probe that opens and decodes each mutant in a worker process.

A decode of a hostile archive may only end in a clean decode or an ArchiveError. The worker runs
each mutant under a memory limit and the parent under a timeout, so a crash (a signal such as
SIGABRT from a Rust allocation), a hang, or any other exception type is seen and reported.

Run as a script it is that worker: it reads archive paths from stdin and answers one
``RESULT {json}`` line per path.
"""
from __future__ import annotations

import hashlib
import json
import os
import select
import shutil
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np

from nvrloader import archive as archive_module
from nvrloader.archive import ArchiveWriter
from nvrloader.compress import entropy, images, quant
from nvrloader.meta_schema import video_key

HEIGHT, WIDTH = 64, 80
CLASSES = ["a", "b", "c", "d"]
VIDEOS = ((5, 1, "train"), (3, 3, "test"))  # (num_frames, label, split) of the tiny archives
KINDS = ("raw", "h264", "nerv", "hnerv", "dnerv")
WORKER_MEMORY = 6 << 30  # address-space limit of the worker: a runaway allocation fails instead of swapping
RESULT = "RESULT "


# -- tiny archives -------------------------------------------------------------------------------
def frames(video: int, num_frames: int) -> np.ndarray:
    """Smooth moving gradients (compressible, so the H.264 stream stays small)."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    t = np.arange(num_frames)[:, None, None]
    x, y = np.broadcast_to(x, t.shape[:1] + x.shape), np.broadcast_to(y, t.shape[:1] + y.shape)
    base = np.stack([x * 3 + t * 7, y * 3 + video * 40, (x + y + t * 5) * 2], axis=-1)
    return (base % 256).astype(np.uint8)


def meta(codec: str, config: dict[str, Any]) -> dict[str, Any]:
    videos = [{"name": f"v{i}", "class_name": CLASSES[label], "label": label, "split": split, "group": None,
               "num_frames": n} for i, (n, label, split) in enumerate(VIDEOS)]
    return {"videos": videos, "classes": CLASSES, "fps": 2.0, "height": HEIGHT, "width": WIDTH,
            "resize_mode": "stretch", "source": "synthetic", "split": 1, "subset": "all", "codec": codec,
            "codec_config": config}


def _neural(name: str, clip_len: int) -> tuple[Any, dict[str, Any]]:
    """An untrained tiny model (decoding does not care how good it is) and its codec config."""
    import torch

    from nvrloader.codecs.neural import jsonable
    from nvrloader.models import create_model

    torch.manual_seed(0)
    extra = {"clip_len": clip_len} if name == "dnerv" else {}
    model = create_model(name, "tiny", (HEIGHT, WIDTH), **extra)
    config = {"model": name, "model_config": jsonable(model.config), "clip_len": clip_len,
              "weights": {"bits": 8.0, "prune": 0.0}, "embeddings": {"bits": 6} if name == "hnerv" else None,
              "keyframes": {"codec": "avif", "quality": 50} if name == "dnerv" else None}
    return model, config


def build(kind: str, path: Path) -> Path:
    """A tiny valid archive of ``kind`` (one of KINDS), written with the archive's own writer."""
    from nvrloader.decode.layouts import keyframe_indices
    from nvrloader.codecs.neural import pack_weights
    from nvrloader.decode.neural import stored_state
    from nvrloader.video_encode import encode_frames

    with ArchiveWriter(path, kind) as writer:
        config: dict[str, Any] = {}
        if kind in ("nerv", "hnerv", "dnerv"):
            model, config = _neural(kind, clip_len=4)
            writer.put("model", "weights", pack_weights(stored_state(model), 8))
        if kind == "hnerv":
            rng = np.random.default_rng(0)
            embeddings = rng.normal(size=(sum(n for n, _, _ in VIDEOS), *model.embedding_shape)).astype(np.float32)
            writer.put("embeddings", "all", quant.pack(quant.quantize_embeddings(embeddings, bits=6)))
        for i, (n, _, _) in enumerate(VIDEOS):
            video = frames(i, n)
            if kind == "raw":
                writer.put("frames", video_key(i), video)
            elif kind == "h264":
                writer.put("streams", video_key(i), encode_frames(video, 2.0, "libx264", {**H264_OPTIONS, "g": str(n)}))
            elif kind == "dnerv":
                keys = video[keyframe_indices(n, config["clip_len"])]
                writer.put("keyframes", video_key(i), images.pack_images(
                    [images.encode_image(f, "avif", 50) for f in keys]))
        writer.set_meta(meta(kind, config))
    return path


# -- re-sealing (what a tamperer with the writer's functions, or a buggy writer, produces) ---------
def reseal(path: Path, change: Callable[[h5py.File], None]) -> None:
    """Change the HDF5 content, then recompute the trailer as the writer does, so integrity passes."""
    with h5py.File(path, "r+") as file:
        change(file)
    archive_module._seal(path)


def _store(file: h5py.File, group: str, name: str, data: bytes | np.ndarray, kind: str | None = None) -> None:
    """(Re)write one payload with a checksum that matches its new content."""
    if group in file and name in file[group]:
        del file[group][name]
    grp = file.require_group(group)
    arr = np.frombuffer(data, np.uint8) if isinstance(data, bytes) else archive_module._little_endian(data)
    dset = grp.create_dataset(name, data=arr)
    dset.attrs["kind"] = kind or ("bytes" if isinstance(data, bytes) else "array")
    dset.attrs["sha256"] = hashlib.sha256(arr.tobytes()).hexdigest()


def read_meta(path: Path) -> dict[str, Any]:
    with h5py.File(path, "r") as file:
        return archive_module.decode_meta(file["meta"][()].tobytes())


def write_meta(path: Path, value: Any) -> None:
    """Replace the meta with ``value`` (any JSON, NaN allowed) and re-seal."""
    write_meta_bytes(path, archive_module.pack_meta(json.dumps(value).encode()))


def write_meta_bytes(path: Path, raw: bytes) -> None:
    """Replace the stored meta with ``raw`` (with a matching checksum) and re-seal."""
    def change(file: h5py.File) -> None:
        del file["meta"]
        dset = file.create_dataset("meta", data=np.frombuffer(raw, np.uint8))
        dset.attrs["sha256"] = hashlib.sha256(raw).hexdigest()

    reseal(path, change)


def edit_meta(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    value = read_meta(path)
    change(value)
    write_meta(path, value)


def read_payload(path: Path, group: str, name: str) -> bytes | np.ndarray:
    with h5py.File(path, "r") as file:
        dset = file[group][name]
        return dset[()].tobytes() if dset.attrs["kind"] == "bytes" else dset[()]


def write_payload(path: Path, group: str, name: str, data: bytes | np.ndarray, kind: str | None = None) -> None:
    reseal(path, lambda file: _store(file, group, name, data, kind))


def payload_names(path: Path) -> list[tuple[str, str]]:
    with h5py.File(path, "r") as file:
        return [(g, n) for g in file if g != "meta" for n in file[g]]


# -- payload surgery -----------------------------------------------------------------------------
def quant_parts(data: bytes) -> tuple[list, bytes, bytes]:
    """A quantised payload split into its header entries, parameter bytes and entropy stream."""
    _, _, meta_len, side_len = quant._HEADER.unpack_from(data)
    pos = quant._HEADER.size
    header = json.loads(zlib.decompress(data[pos:pos + meta_len]))
    return header, data[pos + meta_len:pos + meta_len + side_len], data[pos + meta_len + side_len:]


def quant_join(header: Any, side: bytes, stream: bytes) -> bytes:
    packed = zlib.compress(json.dumps(header).encode())
    return quant._HEADER.pack(quant._MAGIC, quant._PACK_VERSION, len(packed), len(side)) + packed + side + stream


def with_symbol_count(stream: bytes, count: int) -> bytes:
    """An entropy stream whose leading varint (the symbol count) says ``count``."""
    _, pos = entropy._get_varint(stream, 0)
    head = bytearray()
    entropy._put_varint(head, count)
    return bytes(head) + stream[pos:]


def image_bytes(fmt: str, size: tuple[int, int] = (HEIGHT, WIDTH)) -> bytes:
    """An image in a Pillow format other than the archive's (BMP, GIF, PNG, ...), or a minimal EPS."""
    if fmt == "EPS":
        return (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 80 64\n"
                b"newpath 0 0 moveto 80 64 lineto stroke showpage\n%%EOF\n")
    import io

    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(frames(0, 1)[0][:size[0], :size[1]]).save(buffer, format=fmt)
    return buffer.getvalue()


# -- seeded mutations ----------------------------------------------------------------------------
HOSTILE_VALUES: tuple[Any, ...] = (0, -1, 1, 3, 99, 2 ** 31, 2 ** 40, 2 ** 63, -2 ** 63, 10 ** 30, 0.5, -0.0,
                                   1e308, float("nan"), float("inf"), "", "x" * 5000, "avif", "bmp", None, True,
                                   [], {}, [0] * 3, [2 ** 40, 1])
HOSTILE_WORDS = (0, 1, 2, 3, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 0x10000000)


def _json_paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    paths = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            paths += _json_paths(item, prefix + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value[:4]):
            paths += _json_paths(item, prefix + (i,))
    return paths


def mutate_meta(rng: np.random.Generator, path: Path) -> str:
    value = read_meta(path)
    paths = [p for p in _json_paths(value) if p]
    where = paths[rng.integers(len(paths))]
    parent = value
    for key in where[:-1]:
        parent = parent[key]
    action = rng.integers(4)
    if action == 0 and isinstance(parent, dict):
        del parent[where[-1]]
        what = "deleted"
    elif action == 1 and isinstance(parent[where[-1]], (int, float)) and not isinstance(parent[where[-1]], bool):
        parent[where[-1]] = parent[where[-1]] + int(rng.choice([-2, -1, 1, 7]))
        what = "nudged"
    else:
        parent[where[-1]] = HOSTILE_VALUES[rng.integers(len(HOSTILE_VALUES))]
        what = f"= {str(parent[where[-1]])[:30]}"
    write_meta(path, value)
    return f"meta {'.'.join(map(str, where))} {what}"


def damage(rng: np.random.Generator, raw: bytearray) -> tuple[bytearray, str]:
    """``raw`` flipped, overwritten, truncated, extended or replaced; and what was done."""
    action = rng.integers(5)
    if action == 0 and raw:  # flip a few bytes, mostly near the start where the headers are
        for _ in range(int(rng.integers(1, 4))):
            raw[int(rng.integers(min(len(raw), 64 if rng.random() < 0.7 else len(raw))))] ^= 1 << int(rng.integers(8))
        return raw, "flipped"
    if action == 1 and len(raw) >= 4:  # a hostile uint32 over a header word
        at = int(rng.integers(min(len(raw) - 3, 48)))
        raw[at:at + 4] = struct.pack("<I", int(rng.choice(HOSTILE_WORDS)))
        return raw, f"word@{at}"
    if action == 2:
        return raw[:int(rng.integers(len(raw) + 1))], "truncated"
    if action == 3:
        return raw + rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes(), "extended"
    return bytearray(rng.integers(0, 256, len(raw), dtype=np.uint8).tobytes()), "random"


def mutate_payload_bytes(rng: np.random.Generator, path: Path) -> str:
    group, name = (names := payload_names(path))[rng.integers(len(names))]
    data = read_payload(path, group, name)
    raw, what = damage(rng, bytearray(data.tobytes() if isinstance(data, np.ndarray) else data))
    if isinstance(data, np.ndarray):
        usable = len(raw) // data.itemsize * data.itemsize
        new: bytes | np.ndarray = np.frombuffer(bytes(raw[:usable]), data.dtype)
        if new.size == data.size:
            new = new.reshape(data.shape)
    else:
        new = bytes(raw)
    write_payload(path, group, name, new)
    return f"payload {group}/{name} {what}"


def mutate_meta_bytes(rng: np.random.Generator, path: Path) -> str:
    """The stored (compressed) meta damaged, with a matching checksum."""
    with h5py.File(path, "r") as file:
        raw, what = damage(rng, bytearray(file["meta"][()].tobytes()))
    write_meta_bytes(path, bytes(raw))
    return f"stored meta {what}"


QUANT_PAYLOADS = (("model", "weights"), ("embeddings", "all"))


def mutate_quant(rng: np.random.Generator, path: Path) -> str:
    """A quantised payload (weights or embeddings) with a forged symbol count, header field or shape."""
    present = [key for key in QUANT_PAYLOADS if key in payload_names(path)]
    group, name = present[int(rng.integers(len(present)))]
    header, side, stream = quant_parts(read_payload(path, group, name))
    action = rng.integers(3)
    if action == 0:
        count = int(rng.choice([0, 1, 2 ** 20, 2 ** 31, 2 ** 42, 2 ** 62, 2 ** 64 - 1]))
        stream = with_symbol_count(stream, count)
        what = f"symbol count {count}"
    elif action == 1:
        entry = header[int(rng.integers(len(header)))]
        field = int(rng.integers(6))
        entry[field] = HOSTILE_VALUES[rng.integers(len(HOSTILE_VALUES))]
        what = f"entry {entry[0]!s:.30} field {field} = {str(entry[field])[:30]}"
    else:
        entry = header[int(rng.integers(len(header)))]
        if entry[1]:
            entry[1][int(rng.integers(len(entry[1])))] *= int(rng.choice([0, 2, 1000, 2 ** 20]))
        else:
            entry[1] = [2 ** 30]
        what = f"entry {entry[0]!s:.30} shape {str(entry[1])[:30]}"
    write_payload(path, group, name, quant_join(header, side, stream))
    return f"{group}/{name} {what}"


def mutate_kind(rng: np.random.Generator, path: Path) -> str:
    """A payload re-labelled as the other kind (bytes <-> array), or stored with another dtype."""
    group, name = (names := payload_names(path))[rng.integers(len(names))]
    data = read_payload(path, group, name)
    if isinstance(data, bytes) and rng.random() < 0.5:
        write_payload(path, group, name, np.frombuffer(data, np.uint8).copy(), kind="array")
        return f"{group}/{name} bytes stored as an array"
    arr = np.frombuffer(data, np.uint8) if isinstance(data, bytes) else data
    write_payload(path, group, name, arr.astype(str(rng.choice(["float32", "int16", "bool"]))))
    return f"{group}/{name} stored as another dtype"


H264_OPTIONS = {"crf": "30", "preset": "ultrafast"}


def matroska(video: np.ndarray) -> bytes:
    """``video`` as H.264 in Matroska: the stream payload of a version-1 archive."""
    import tempfile

    from nvrloader.video_encode import write_video

    with tempfile.TemporaryDirectory() as folder:
        file = Path(folder) / "v.mkv"
        write_video(file, video, 2.0, "libx264", {**H264_OPTIONS, "g": str(len(video))})
        return file.read_bytes()


def downgrade(path: Path) -> None:
    """Rewrite an archive as version 1 stored it: plain JSON meta and H.264 streams in Matroska."""
    value = read_meta(path)
    reseal(path, lambda file: file.attrs.__setitem__("version", 1))
    write_meta_bytes(path, json.dumps(value).encode())
    if "streams" in {group for group, _ in payload_names(path)}:
        for i, (n, _, _) in enumerate(VIDEOS):
            write_payload(path, "streams", video_key(i), matroska(frames(i, n)))


def mutate_stream(rng: np.random.Generator, path: Path) -> str:
    """An H.264 stream swapped for another container or codec, a playlist, or frames of another size."""
    from nvrloader.video_encode import encode_frames

    name = video_key(int(rng.integers(len(VIDEOS))))
    n = VIDEOS[int(name)][0]
    action = rng.integers(4)
    if action == 3:
        data, what = matroska(frames(int(name), n)), "the same video in Matroska"
    elif action == 0:
        data, what = b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile:///etc/hostname\n#EXT-X-ENDLIST\n", "a playlist"
    elif action == 1:
        data, what = encode_frames(frames(0, n), 2.0, "mpeg4", {}), "MPEG-4 part 2"
    else:
        big = np.repeat(np.repeat(frames(0, n), 2, axis=1), 2, axis=2)
        data, what = encode_frames(big, 2.0, "libx264", {"preset": "ultrafast"}), "frames twice the size"
    write_payload(path, "streams", name, data)
    return f"streams/{name} {what}"


def mutate_keyframes(rng: np.random.Generator, path: Path) -> str:
    name = video_key(int(rng.integers(len(VIDEOS))))
    streams = images.unpack_images(read_payload(path, "keyframes", name))
    action = rng.integers(3)
    if action == 0:
        fmt = str(rng.choice(["BMP", "EPS", "PNG", "GIF", "TIFF", "WEBP", "JPEG"]))
        streams[int(rng.integers(len(streams)))] = image_bytes(fmt)
        data, what = images.pack_images(streams), f"a {fmt} keyframe"
    elif action == 1:
        data = images.pack_images(streams)
        count = int(rng.choice(HOSTILE_WORDS))
        data, what = struct.pack("<I", count) + data[4:], f"count {count}"
    else:
        data = images.pack_images(streams[:-1] if rng.random() < 0.5 else streams + streams[:1])
        what = "one keyframe too few or many"
    write_payload(path, "keyframes", name, data)
    return f"keyframes/{name} {what}"


def flip_file(rng: np.random.Generator, path: Path) -> str:
    """Random damage, not re-sealed: integrity checks (or lazy payload checksums) must catch it."""
    raw = bytearray(path.read_bytes())
    for _ in range(int(rng.integers(1, 8))):
        raw[int(rng.integers(len(raw)))] ^= 1 << int(rng.integers(8))
    path.write_bytes(bytes(raw))
    return "random flips"


MUTATORS: dict[str, tuple[Callable[[np.random.Generator, Path], str], ...]] = {
    "raw": (mutate_meta, mutate_meta, mutate_meta_bytes, mutate_payload_bytes, mutate_kind, flip_file),
    "h264": (mutate_meta, mutate_meta, mutate_meta_bytes, mutate_payload_bytes, mutate_stream, mutate_kind,
             flip_file),
    "nerv": (mutate_meta, mutate_quant, mutate_quant, mutate_payload_bytes, mutate_kind, flip_file),
    "hnerv": (mutate_meta, mutate_quant, mutate_quant, mutate_payload_bytes, mutate_kind, flip_file),
    "dnerv": (mutate_meta, mutate_quant, mutate_keyframes, mutate_keyframes, mutate_payload_bytes, mutate_kind,
              flip_file),
}


@dataclass
class Mutant:
    kind: str
    path: Path
    change: str


def mutants(bases: dict[str, Path], out: Path, count: int, seed: int) -> list[Mutant]:
    """``count`` seeded mutants spread over the base archives (kind -> path), written under ``out``."""
    rng = np.random.default_rng(seed)
    kinds = sorted(bases)
    result = []
    for i in range(count):
        kind = kinds[i % len(kinds)]
        path = out / f"m{i:04d}-{kind}.nvr"
        shutil.copyfile(bases[kind], path)
        mutators = MUTATORS[kind]
        change = mutators[int(rng.integers(len(mutators)))](rng, path)
        result.append(Mutant(kind, path, change))
    return result


# -- the probe -----------------------------------------------------------------------------------
def exercise(path: str) -> dict[str, Any]:
    """Open and decode everything a user could: every frame of every video, the size report, a clip."""
    import torch

    from nvrloader.archive import ArchiveError, open_archive
    from nvrloader.decode import open_decoder
    from nvrloader.dataset import NVRDataset
    from nvrloader.eval import size_report

    try:
        with open_archive(path) as archive:
            decoder = open_decoder(archive, "cpu")
            shape = (3, archive.meta["height"], archive.meta["width"])
            for v, video in enumerate(archive.meta["videos"]):
                clip = decoder.decode([(v, np.arange(video["num_frames"]))])[0]
                if tuple(clip.shape) != (video["num_frames"], *shape) or clip.dtype != torch.uint8:
                    return {"outcome": "wrong", "message": f"video {v} decoded to {tuple(clip.shape)}"}
            if not archive.meta["videos"]:
                return {"outcome": "ok"}  # an empty archive: valid, nothing to decode
            size_report(archive)
        dataset = NVRDataset(path, split="all", device="cpu")
        classes = len(dataset.classes)
        if not all(0 <= label < classes if classes else label == -1 for label in dataset.labels):
            return {"outcome": "wrong", "message": f"labels {dataset.labels} for {classes} classes"}
        dataset[0]
        return {"outcome": "ok"}
    except ArchiveError as err:
        return {"outcome": "archive_error", "message": str(err)[:300]}
    except BaseException as err:  # noqa: BLE001 - exactly what the tests look for
        return {"outcome": "escaped", "type": type(err).__name__, "message": str(err)[:300]}


class Prober:
    """A worker process that exercises one archive at a time; a crash or hang kills only the worker."""

    def __init__(self, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self._proc: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
               "OMP_NUM_THREADS": "1"}
        return subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, env=env, text=True, bufsize=1)

    def probe(self, path: Path) -> dict[str, Any]:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = self._start()
        proc = self._proc
        proc.stdin.write(f"{path}\n")
        proc.stdin.flush()
        while True:
            ready, _, _ = select.select([proc.stdout], [], [], self.timeout)
            if not ready:
                self.close()
                return {"outcome": "timeout", "message": f"no answer in {self.timeout} s"}
            line = proc.stdout.readline()
            if not line:  # the worker died: a signal (negative return code) or an exit
                code = proc.wait()
                self._proc = None
                return {"outcome": "crash", "message": f"worker exit code {code}"}
            if line.startswith(RESULT):
                return json.loads(line[len(RESULT):])

    def close(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def __enter__(self) -> "Prober":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _worker() -> None:
    import resource

    import torch

    torch.set_num_threads(1)
    resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY, WORKER_MEMORY))
    for line in sys.stdin:
        result = exercise(line.strip())
        sys.stdout.write(RESULT + json.dumps(result) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    _worker()
