"""Frame store: round trip against read_video, reuse, resume after an interruption, restarts, skip_bad."""

from __future__ import annotations

import multiprocessing
import pickle
from pathlib import Path

import av
import h5py
import numpy as np
import pytest

from nvrloader import video
from nvrloader.framestore import (FrameStore, FrameStoreError, build_framestore, open_or_build_framestore,
                                  store_filename)
from nvrloader.sources import discover

SIZE = (24, 32)
CLASSES = ("Archery", "Rowing")
GROUPS = (1, 8, 9)     # group 1 is in test for split 1, the others in train
NUM_FRAMES = 8


def write_avi(path: Path, seed: int) -> None:
    """A tiny MPEG-4 .avi (64x48, 8 frames at 8 fps) with content distinct per seed."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for t in range(NUM_FRAMES):
            frame = av.VideoFrame.from_ndarray(np.roll(base, 4 * t, axis=1), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mini")
    for c, cls in enumerate(CLASSES):
        (root / cls).mkdir()
        for g in GROUPS:
            write_avi(root / cls / f"v_{cls}_g{g:02d}_c01.avi", seed=10 * c + g)
    return root


class CountingReader:
    """Wraps read_video: counts decodes and can fail on the n-th call."""

    def __init__(self, fail_on: int | None = None, error: BaseException | None = None):
        self.real, self.fail_on, self.error, self.paths = video.read_video, fail_on, error, []

    def __call__(self, path, **kwargs):
        self.paths.append(Path(path))
        if len(self.paths) == self.fail_on:
            raise self.error
        return self.real(path, **kwargs)


@pytest.fixture
def reader(monkeypatch):
    def install(**kwargs) -> CountingReader:
        counting = CountingReader(**kwargs)
        monkeypatch.setattr(video, "read_video", counting)
        return counting
    return install


def test_round_trip_matches_read_video(dataset, tmp_path):
    index = discover(dataset)
    with open_or_build_framestore(dataset, tmp_path, fps=4, size=SIZE, resize_mode="crop", progress=False) as store:
        assert len(store) == len(index.records) == 6
        assert store.records == index.records
        assert store.classes == list(CLASSES)
        assert (store.fps, store.height, store.width, store.resize_mode) == (4, *SIZE, "crop")
        for i, record in enumerate(index.records):
            expected = video.read_video(record.path, fps=4, size=SIZE, resize_mode="crop")
            assert store.num_frames(i) == len(expected) > 0
            np.testing.assert_array_equal(store.frames(i), expected)
        with h5py.File(store.path, "r") as f:
            data = f["videos/000000"]
            assert data.dtype == np.uint8 and data.chunks == (1, *SIZE, 3) and data.compression == "lzf"


@pytest.fixture(scope="module")
def built(dataset, tmp_path_factory) -> FrameStore:
    return open_or_build_framestore(dataset, tmp_path_factory.mktemp("cache"), fps=None, size=SIZE, progress=False)


@pytest.mark.parametrize("idx", [[5, 1, 1, 7, 0], [-1, 2, -8], [3], [0, 7], np.array([6, 6, 6], np.int32),
                                 slice(1, 6, 2), slice(None, None, -3), slice(2, 5), slice(6, 2), []])
def test_random_access_matches_numpy_indexing(built, idx):
    full = built.frames(1)
    expected = full[np.asarray(idx, dtype=int)] if isinstance(idx, list) else full[idx]
    np.testing.assert_array_equal(built.frames(1, idx), expected)


@pytest.mark.parametrize(("idx", "error"), [([8], IndexError), ([-9], IndexError), ([0.5], TypeError)])
def test_bad_frame_indices_are_rejected(built, idx, error):
    with pytest.raises(error):
        built.frames(0, idx)


def _child_reads(store: FrameStore) -> bytes:
    return store.frames(2, [4, 0]).tobytes()


def test_store_is_usable_from_worker_processes(built):
    built.frames(2)   # the parent holds an open handle before the workers start
    expected = built.frames(2, [4, 0]).tobytes()
    assert pickle.loads(pickle.dumps(built)).frames(2, [4, 0]).tobytes() == expected
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply(_child_reads, (built,)) == expected


def test_complete_store_is_reused_without_decoding(dataset, tmp_path, reader):
    first = open_or_build_framestore(dataset, tmp_path, fps=None, size=SIZE, progress=False)
    reader(fail_on=1, error=AssertionError("decoded again"))
    second = open_or_build_framestore(discover(dataset), tmp_path, fps=None, size=SIZE, progress=False)
    assert second.path == first.path
    np.testing.assert_array_equal(second.frames(3), first.frames(3))


def test_file_name_is_readable_and_keyed(dataset):
    index = discover(dataset)
    name = store_filename(index, 2, (256, 320), "stretch", "all")
    assert name.startswith(f"{dataset.name.lower().replace('_', '-')}-2fps-256x320-stretch-all-") and name.endswith(".h5")
    assert store_filename(index, 2.0, [256.0, 320], "stretch", "all") == name
    variants = {store_filename(index, *args) for args in [(2, (256, 320), "stretch", "all"), (1, (256, 320), "stretch", "all"),
                                                         (2, (128, 160), "stretch", "all"), (2, (256, 320), "crop", "all"),
                                                         (2, (256, 320), "stretch", "train"), (None, (256, 320), "stretch", "all")]}
    assert len(variants) == 6
    assert store_filename(discover(dataset, split=2), 2, (256, 320), "stretch", "all") != name


def test_equal_settings_in_other_types_share_the_store(dataset, tmp_path, reader):
    first = open_or_build_framestore(dataset, tmp_path, fps=4, size=SIZE, progress=False)
    reader(fail_on=1, error=AssertionError("decoded again"))
    second = open_or_build_framestore(str(dataset), tmp_path, fps=4.0, size=[float(s) for s in SIZE], progress=False)
    assert second.path == first.path and second.fps == 4.0


def test_interrupted_build_resumes(dataset, tmp_path, reader):
    index = discover(dataset)
    out = tmp_path / "store.h5"
    partial = tmp_path / "store.h5.partial"
    reader(fail_on=3, error=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        build_framestore(index, out, None, SIZE, progress=False)
    assert not out.exists() and partial.exists()
    with h5py.File(partial, "a") as f:   # a video whose write never finished (no "done" flag)
        f.create_dataset("videos/000002", data=np.zeros((1, *SIZE, 3), np.uint8))
    resumed = reader()
    store = build_framestore(index, out, None, SIZE, progress=False)
    assert resumed.paths == [r.path for r in index.records[2:]]
    assert not partial.exists()
    for i, record in enumerate(index.records):
        np.testing.assert_array_equal(store.frames(i), video.read_video(record.path, size=SIZE))


def test_partial_with_another_key_restarts(dataset, tmp_path, reader):
    index = discover(dataset)
    out = tmp_path / "store.h5"
    reader(fail_on=4, error=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        build_framestore(index, out, None, SIZE, progress=False)
    restarted = reader()
    store = build_framestore(index, out, None, (16, 16), progress=False)
    assert len(restarted.paths) == len(index.records)
    assert store.frames(5).shape == (NUM_FRAMES, 16, 16, 3)


def test_complete_store_with_another_key_is_rebuilt(dataset, tmp_path, reader):
    index = discover(dataset)
    out = tmp_path / "store.h5"
    build_framestore(index, out, None, SIZE, resize_mode="stretch", progress=False).close()
    rebuilt = reader()
    store = build_framestore(index, out, None, SIZE, resize_mode="crop", progress=False)
    assert len(rebuilt.paths) == len(index.records)
    assert store.resize_mode == "crop"
    np.testing.assert_array_equal(store.frames(0), video.read_video(index.records[0].path, size=SIZE, resize_mode="crop"))


def test_incomplete_file_is_not_opened(dataset, tmp_path, reader):
    reader(fail_on=2, error=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        build_framestore(discover(dataset), tmp_path / "s.h5", None, SIZE, progress=False)
    with pytest.raises(FrameStoreError, match="incomplete"):
        FrameStore(tmp_path / "s.h5.partial")


@pytest.fixture
def with_bad_video(dataset, tmp_path) -> Path:
    root = tmp_path / "src"
    for cls in CLASSES:
        (root / cls).mkdir(parents=True)
        for p in (dataset / cls).iterdir():
            (root / cls / p.name).symlink_to(p)
    (root / "Archery" / "v_Archery_g05_c01.avi").write_bytes(b"RIFF not really a video" * 50)
    return root


def test_bad_video_stops_the_build_by_default(with_bad_video, tmp_path):
    with pytest.raises(video.VideoError, match="v_Archery_g05_c01.avi"):
        open_or_build_framestore(with_bad_video, tmp_path / "cache", None, SIZE, progress=False)
    assert not list((tmp_path / "cache").glob("*.h5"))


def test_skip_bad_leaves_bad_videos_out(with_bad_video, tmp_path):
    index = discover(with_bad_video)
    bad = index.records[1]
    assert bad.name == "v_Archery_g05_c01"
    with pytest.warns(UserWarning, match="1 unreadable video"):
        store = open_or_build_framestore(index, tmp_path, None, SIZE, skip_bad=True, progress=False)
    kept = [r for r in index.records if r != bad]
    assert store.records == kept
    assert [s["path"] for s in store.skipped] == [str(bad.path)] and store.skipped[0]["error"]
    for i, record in enumerate(kept):
        np.testing.assert_array_equal(store.frames(i), video.read_video(record.path, size=SIZE))
    with pytest.raises(video.VideoError, match="skip_bad"):   # reusing it without skip_bad is not silent
        open_or_build_framestore(index, tmp_path, None, SIZE, progress=False)


@pytest.mark.parametrize(("kwargs", "words"), [({"fps": 0}, "fps"), ({"size": (24,)}, "size"),
                                               ({"resize_mode": "pad"}, "resize_mode"), ({"subset": "val"}, "subset")])
def test_bad_settings_are_rejected_before_decoding(dataset, tmp_path, kwargs, words):
    args = {"fps": None, "size": SIZE, **kwargs}
    with pytest.raises(ValueError, match=words):
        open_or_build_framestore(dataset, tmp_path, **args, progress=False)
    assert not list(tmp_path.iterdir())


def test_failed_build_leaves_no_partial_store(dataset, tmp_path, reader):
    index = discover(dataset)
    reader(fail_on=3, error=video.VideoError("clip.avi: cannot decode"))
    with pytest.raises(video.VideoError):
        build_framestore(index, tmp_path / "store.h5", None, SIZE, progress=False)
    assert list(tmp_path.iterdir()) == []
