"""Dataset discovery: the three layouts, the official UCF101 lists, and clear errors for broken folders.

Sources never decode, so empty files with video names stand in for videos here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nvrloader.sources import SourceError, discover

CLASSES = ["ApplyEyeMakeup", "Archery", "JumpingJack", "JumpRope"]   # classInd (case-insensitive) order
GROUPS = range(1, 26)
TEST_GROUPS = {1: range(1, 8), 2: range(8, 15), 3: range(15, 22)}


def ucf_name(cls: str, group: int, clip: int) -> str:
    return f"v_{cls}_g{group:02d}_c{clip:02d}"


def make_ucf(base: Path, lists_in: str = "ucfTrainTestlist", splits=(1,), groups=GROUPS) -> dict:
    """Write an official-style UCF101 tree (CRLF lists with blank lines) and return what it should index as."""
    videos = base / "UCF-101"
    list_dir = {"ucfTrainTestlist": base / "ucfTrainTestlist", "src": base}[lists_in]
    list_dir.mkdir(parents=True, exist_ok=True)
    (list_dir / "classInd.txt").write_bytes(
        b"".join(f"{i} {c}\r\n".encode() for i, c in enumerate(CLASSES, 1)) + b"\r\n")
    expected = {}
    for split in splits:
        train, test, truth = [], [], {}
        for label, cls in enumerate(CLASSES):
            (videos / cls).mkdir(parents=True, exist_ok=True)
            for g in groups:
                name = ucf_name(cls, g, 1)
                (videos / cls / f"{name}.avi").touch()
                is_test = g in TEST_GROUPS[split]
                (test if is_test else train).append(
                    f"{cls}/{name}.avi" if is_test else f"{cls}/{name}.avi {label + 1}")
                truth[name] = (cls, label, "test" if is_test else "train", g)
        (list_dir / f"trainlist{split:02d}.txt").write_bytes(("\r\n".join(train) + "\r\n\r\n").encode())
        (list_dir / f"testlist{split:02d}.txt").write_bytes(("\r\n".join(test) + "\r\n").encode())
        expected[split] = truth
    return expected


def summary(index) -> dict:
    return {r.name: (r.class_name, r.label, r.split, r.group) for r in index.records}


@pytest.mark.parametrize("variant", ["list_folder", "lists_in_src", "src_is_ucf101"])
def test_official_layout_variants(tmp_path, variant):
    expected = make_ucf(tmp_path, lists_in="src" if variant == "lists_in_src" else "ucfTrainTestlist")[1]
    src = tmp_path / "UCF-101" if variant == "src_is_ucf101" else tmp_path
    index = discover(src)
    assert index.layout == "ucf101"
    assert index.classes == CLASSES
    assert summary(index) == expected
    assert all(r.path.is_absolute() and r.path.is_file() for r in index.records)
    assert [(r.label, r.name) for r in index.records] == sorted((r.label, r.name) for r in index.records)
    assert {r.name for r in index.subset("test")} == {n for n, v in expected.items() if v[2] == "test"}
    assert len(index.subset("train")) + len(index.subset("test")) == len(index.subset("all")) == 100


@pytest.mark.parametrize("split", [1, 2, 3])
def test_official_splits_read_their_own_lists(tmp_path, split):
    expected = make_ucf(tmp_path, splits=(1, 2, 3))
    index = discover(tmp_path, split=split)
    assert index.split == split
    assert summary(index) == expected[split]
    assert {r.group for r in index.subset("test")} == set(TEST_GROUPS[split])


def test_videos_in_no_list_are_left_out_but_counted(tmp_path):
    make_ucf(tmp_path)
    extra = tmp_path / "UCF-101" / "Archery" / "v_Archery_g26_c01.avi"
    extra.touch()
    index = discover(tmp_path)
    assert extra not in {r.path for r in index.records}
    assert index.unlisted == [extra.resolve()]


def _lists(tmp_path: Path) -> Path:
    return tmp_path / "ucfTrainTestlist"


def _append(path: Path, line: str) -> None:
    path.write_bytes(path.read_bytes() + line.encode() + b"\r\n")


def _remove_videos(tmp_path: Path, count: int) -> None:
    for p in sorted((tmp_path / "UCF-101" / "Archery").glob("*.avi"))[-count:]:
        p.unlink()


def _mixed(tmp_path: Path) -> None:
    (tmp_path / "Archery").mkdir()
    (tmp_path / "Archery" / "a.avi").touch()
    (tmp_path / "loose.mp4").touch()


BROKEN = {
    "missing_src": (lambda p: shutil.rmtree(p), ["does not exist"]),
    "empty_folder": (lambda p: None, ["empty folder", "expected videos"]),
    "no_videos": (lambda p: [(p / "notes.txt").touch(), (p / "sub").mkdir()],
                  ["2 entries without videos", "notes.txt", "sub/"]),
    "mixed": (_mixed, ["found both", "1 class folders", "loose.mp4"]),
    "missing_video": (lambda p: [make_ucf(p), _remove_videos(p, 1)],
                      ["trainlist01.txt names 1 video(s) that do not exist", "line 36", "v_Archery_g25_c01.avi"]),
    "many_missing": (lambda p: [make_ucf(p), _remove_videos(p, 12)],
                     ["trainlist01.txt names 12 video(s)", "(7 more)"]),
    "class_not_in_classInd": (lambda p: [make_ucf(p), _append(_lists(p) / "testlist01.txt", "Bowling/v_Bowling_g01_c01.avi")],
                              ["testlist01.txt, line 29", "'Bowling' is not in classInd.txt"]),
    "bad_classInd": (lambda p: [make_ucf(p), _append(_lists(p) / "classInd.txt", "five Bowling")],
                     ["classInd.txt, line 6", "expected '<index> <ClassName>'", "five Bowling"]),
    "classInd_gap": (lambda p: [make_ucf(p), _append(_lists(p) / "classInd.txt", "7 Bowling")],
                     ["classInd.txt", "without gaps", "missing 5, 6"]),
    "bad_list_line": (lambda p: [make_ucf(p), _append(_lists(p) / "trainlist01.txt", "Archery/x.avi 1 extra")],
                      ["trainlist01.txt, line 74", "expected '<Class>/<video file> [<label>]'"]),
    "no_class_folder": (lambda p: [make_ucf(p), _append(_lists(p) / "testlist01.txt", "x.avi")],
                        ["testlist01.txt, line 29", "no class folder"]),
    "wrong_label": (lambda p: [make_ucf(p), _append(_lists(p) / "trainlist01.txt", "Archery/v_Archery_g01_c01.avi 3")],
                    ["trainlist01.txt, line 74", "label 3 contradicts", "index 2"]),
    "listed_twice": (lambda p: [make_ucf(p), _append(_lists(p) / "trainlist01.txt", "Archery/v_Archery_g01_c01.avi 2")],
                     ["v_Archery_g01_c01.avi is listed twice", "testlist01.txt and trainlist01.txt"]),
    "missing_list": (lambda p: [make_ucf(p), (_lists(p) / "testlist01.txt").unlink()],
                     ["expected testlist01.txt for split 1", "found only classInd.txt, trainlist01.txt"]),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_layouts_raise_one_clear_error(tmp_path, case):
    src = tmp_path / "src"
    src.mkdir()
    mutate, words = BROKEN[case]
    mutate(src)
    with pytest.raises(SourceError) as err:
        discover(src)
    for word in words:
        assert word in str(err.value), f"{word!r} missing from: {err.value}"


@pytest.mark.parametrize(("split", "words"), [(4, "UCF101 lists define splits 1, 2 and 3, got split 4"),
                                               (0, "positive integer"), ("1", "positive integer")])
def test_split_must_exist(tmp_path, split, words):
    make_ucf(tmp_path)
    with pytest.raises(SourceError, match=words):
        discover(tmp_path, split=split)


def test_src_must_be_a_folder(tmp_path):
    (tmp_path / "v.avi").touch()
    with pytest.raises(SourceError, match="found a file"):
        discover(tmp_path / "v.avi")


@pytest.mark.parametrize("split", [1, 2, 3])
def test_class_folders_split_by_ucf_group(tmp_path, split):
    for cls in CLASSES:
        (tmp_path / cls).mkdir()
        for g in GROUPS:
            for c in (1, 2):
                (tmp_path / cls / f"{ucf_name(cls, g, c)}.avi").touch()
    index = discover(tmp_path, split=split)
    assert index.layout == "class_folders"
    assert index.classes == CLASSES   # JumpingJack before JumpRope, as in UCF101's classInd
    assert {r.name: r.label for r in index.records} == {
        ucf_name(c, g, k): CLASSES.index(c) for c in CLASSES for g in GROUPS for k in (1, 2)}
    test_groups = {(r.class_name, r.group) for r in index.subset("test")}
    train_groups = {(r.class_name, r.group) for r in index.subset("train")}
    assert not test_groups & train_groups
    assert {g for _, g in test_groups} == set(TEST_GROUPS[split])
    assert summary(discover(tmp_path, split=split)) == summary(index)


def test_class_folders_without_lists_match_official_labels(tmp_path):
    expected = make_ucf(tmp_path)[1]
    shutil.rmtree(tmp_path / "ucfTrainTestlist")
    index = discover(tmp_path)
    assert index.layout == "class_folders"
    assert summary(index) == expected


def test_class_folders_with_free_names_split_by_stable_hash(tmp_path):
    for cls in ("b", "a"):
        (tmp_path / cls).mkdir()
        for i in range(40):
            (tmp_path / cls / f"clip_{i:03d}.mp4").touch()
    index = discover(tmp_path)
    assert index.classes == ["a", "b"]
    assert all(r.group is None for r in index.records)
    # Pinned: the split must not change across runs, processes or machines (sha256, not hash()).
    expected_test = {"clip_001", "clip_003", "clip_005", "clip_018", "clip_019", "clip_021", "clip_026",
                     "clip_030", "clip_031", "clip_033", "clip_034", "clip_038", "clip_039"}
    for cls in ("a", "b"):
        assert {r.name for r in index.subset("test") if r.class_name == cls} == expected_test
    other_split = {r.name for r in discover(tmp_path, split=2).subset("test")}
    assert other_split != expected_test


def test_flat_folder_is_unlabelled(tmp_path):
    names = ["zebra.mkv", "a.MP4", ucf_name("Archery", 3, 1) + ".avi", ucf_name("Archery", 9, 1) + ".avi"]
    for n in names:
        (tmp_path / n).touch()
    (tmp_path / "readme.txt").touch()
    (tmp_path / ".hidden.avi").touch()
    index = discover(tmp_path)
    assert index.layout == "flat" and index.classes == []
    assert [r.name for r in index.records] == sorted(Path(n).stem for n in names)
    assert all(r.label == -1 and r.class_name is None for r in index.records)
    by_name = {r.name: r for r in index.records}
    assert by_name["v_Archery_g03_c01"].split == "test" and by_name["v_Archery_g03_c01"].group == 3
    assert by_name["v_Archery_g09_c01"].split == "train"


def test_subset_rejects_unknown_names(tmp_path):
    (tmp_path / "a.avi").touch()
    with pytest.raises(ValueError, match="subset must be"):
        discover(tmp_path).subset("val")
