"""`python -m nvrloader.bench`: what a user needs to choose a codec and loader settings, in one run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from nvrloader import bench
from tiny_archives import videos, write_dnerv, write_h264, write_raw

FIELDS = {"archive", "name", "codec", "num_workers", "decode_in", "threads", "batch_size", "device", "clips_per_s",
          "frames_per_s", "clips_per_s_min", "clips_per_s_max", "ratio_to_raw", "ratio_to_h264",
          "frames_delivered_per_pass", "frames_decoded_per_pass", "decoded_per_delivered",
          "keyframes_decoded_per_pass", "keyframes_encoded_per_pass"}


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("bench")
    frames = videos()
    # D-NeRV first: references are found by codec, not by position
    return [write_dnerv(root / "dnerv.nvr", frames), write_raw(root / "raw.nvr", frames),
            write_h264(root / "h264.nvr", frames)]


def test_bench_reports_speed_ratios_and_work_for_each_worker_count(archives, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main([*map(str, archives), "--batch-size", "2", "--repeats", "1", "--num-workers", "0,1",
                       "--device", "cpu", "-o", str(out)]) == 0
    report = json.loads(out.read_text())
    assert (report["batch_size"], report["device"], report["num_workers"]) == (2, "cpu", [0, 1])
    rows = report["results"]
    assert [(r["codec"], r["num_workers"]) for r in rows] == [(c, w) for w in (0, 1) for c in ("dnerv", "raw", "h264")]
    for r in rows:
        assert FIELDS <= set(r) and r["clips_per_s"] > 0 and r["frames_per_s"] == pytest.approx(8 * r["clips_per_s"])
        assert r["frames_delivered_per_pass"] == 3 * 8                 # 3 clips of 8 TSN frames each pass
        ref = {c: next(p for p in rows if p["codec"] == c and p["num_workers"] == r["num_workers"])
               for c in ("raw", "h264")}
        for codec, other in ref.items():
            assert r[f"ratio_to_{codec}"] == pytest.approx(r["clips_per_s"] / other["clips_per_s"])
    assert {r["threads"] for r in rows if r["num_workers"] == 1} == {1}   # measured inside the worker
    dnerv = rows[0]
    assert dnerv["frames_decoded_per_pass"] == 6 * 8 and dnerv["decoded_per_delivered"] == 2.0  # 6 clips decoded
    assert dnerv["keyframes_encoded_per_pass"] == 0                  # the warm-up filled the pyramid cache
    assert out.with_suffix(".png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "device cpu, batch 2" in printed and "x h264" in printed and "dnerv.nvr" in printed
    assert report["sampling"] == "eval" and "segment centres" in printed


def test_bench_times_training_sampling_when_asked(archives, tmp_path):
    out = tmp_path / "train.json"
    assert bench.main([str(archives[0]), "--batch-size", "3", "--repeats", "2", "--num-workers", "0",
                       "--sampling", "train", "--device", "cpu", "-o", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["sampling"] == "train" and report["results"][0]["frames_delivered_per_pass"] == 24


def test_bench_decodes_in_the_main_process_when_asked(archives, tmp_path, capsys):
    out = tmp_path / "main.json"
    assert bench.main([str(archives[0]), "--batch-size", "3", "--repeats", "1", "--num-workers", "1",
                       "--decode-in", "main", "--device", "cpu", "-o", str(out)]) == 0
    (row,) = json.loads(out.read_text())["results"]
    assert row["decode_in"] == "main" and row["frames_delivered_per_pass"] == 24
    assert row["ratio_to_raw"] is None and row["ratio_to_h264"] is None   # no reference in the list


def test_bench_refuses_bad_worker_lists(archives):
    with pytest.raises(SystemExit):
        bench.main([str(archives[0]), "--num-workers", "0,-1"])
