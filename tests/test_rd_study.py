"""The rate-distortion study: report pieces from known entries, resumable cells, and one real study end to end."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from nvrloader.build import FrameSpec
from nvrloader.codecs import CodecError
from nvrloader.study import cli, rd
from nvrloader.study.rdreport import deltas, table_markdown, write_outputs

OUTPUTS = ("table.md", "results.json", "rd_psnr.png", "rd_msssim.png")


def entry(codec: str, level: float, bpp: float | None, psnr: float = 0.0, ms_ssim: float = 0.0) -> dict:
    if bpp is None:
        return {"codec": codec, "target_bpp": level, "name": f"{codec}_{level:g}bpp", "status": "unreachable",
                "message": f"{codec}: target {level:g} bpp is out of reach", "wall_seconds": 0.1}
    return {"codec": codec, "target_bpp": level, "name": f"{codec}_{level:g}bpp", "status": "done",
            "wall_seconds": 1.0, "summary": {"bpp": bpp, "psnr": psnr, "ms_ssim": ms_ssim, "num_videos": 3}}


def study_of(builds: list[dict], codecs: list[str], levels: list[float]) -> dict:
    return {"command": "python -m nvrloader.study rd", "dataset": "toy", "codecs": codecs, "levels": levels,
            "anchor": "h264", "time_budget": 7.0, "frames": {"fps": 2.0, "resolution": [64, 80]},
            "neural": {"size": "tiny"}, "builds": builds, "deltas": deltas(builds, codecs, "h264"),
            "wall_seconds": 12.0, "build_wall_seconds": 9.0}


def test_table_plots_and_deltas_from_known_entries(tmp_path):
    levels = [0.1, 0.2, 0.4]
    quality = {0.1: (30.0, 0.90), 0.2: (33.0, 0.95), 0.4: (36.0, 0.98)}
    builds = [entry("h264", b, b, *quality[b]) for b in levels]
    # "cheap" reaches the anchor's qualities on 80 % of its rate: BD-rate exactly -20 % on both metrics
    builds += [entry("cheap", b, 0.8 * b, *quality[b]) for b in levels]
    builds += [entry("nerv", 0.1, None), entry("nerv", 0.2, 0.21, 31.0, 0.93), entry("nerv", 0.4, None)]
    study = study_of(builds, ["h264", "cheap", "nerv"], levels)
    cheap = study["deltas"]["cheap"]
    assert cheap["bd_rate_psnr"]["value"] == pytest.approx(-20.0, abs=1e-9)
    assert cheap["bd_rate_msssim"]["value"] == pytest.approx(-20.0, abs=1e-9)
    assert cheap["bd_rate_psnr"]["fit"] == "quadratic" and cheap["points"] == 3
    assert study["deltas"]["nerv"]["bd_psnr"]["value"] is None and "h264" not in study["deltas"]

    table = table_markdown(study)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert "| codec | 0.1 bpp | 0.2 bpp | 0.4 bpp | BD-rate (PSNR) vs h264 | BD-PSNR vs h264 |" in table
    assert "0.1600 · 33.00 dB · 0.9500" in rows["cheap"] and "-20.0 % (quadratic)" in rows["cheap"]
    assert rows["nerv"].count("unreachable [") == 2 and "n/a (needs 2 or more" in rows["nerv"]
    assert "[2] nerv at 0.4 bpp: nerv: target 0.4 bpp is out of reach" in table
    assert "toy (3 videos, 64x80, 2 fps), neural fit 7 s each" in table
    assert "Wall time: 12 s this run; the builds took 9 s" in table

    written = write_outputs(study, tmp_path)
    assert sorted(p.name for p in written) == sorted(OUTPUTS)
    assert json.loads((tmp_path / "results.json").read_text())["deltas"]["cheap"]["bd_psnr"]["value"] > 0
    for png in ("rd_psnr.png", "rd_msssim.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_settings_are_refused_before_any_build(tmp_path, capsys):
    with pytest.raises(ValueError, match="no rate setting"):
        rd.StudyConfig(codecs=("h264", "raw"), levels=(0.2,), time_budget=5)
    with pytest.raises(ValueError, match="distinct positive"):
        rd.StudyConfig(codecs=("h264",), levels=(0.2, 0.2), time_budget=5)
    with pytest.raises(ValueError, match="unknown codec 'h266'"):
        rd.StudyConfig(codecs=("h266",), levels=(0.2,), time_budget=5)
    assert cli.main(["rd", "--codecs", "h265,nerv", "-o", str(tmp_path)]) == 2
    assert "anchor 'h264' must be one of" in capsys.readouterr().err
    assert cli.main(["rd", "--codecs", "h264", "--rebuild", "dnerv", "-o", str(tmp_path)]) == 2
    assert not list(tmp_path.iterdir())
    config = rd.StudyConfig(codecs=("dnerv", "nerv", "h264"), levels=(0.2,), time_budget=30,
                            frames=FrameSpec(resolution=(64, 80)))
    dnerv, nerv = config.options("dnerv"), config.options("nerv")
    assert dnerv.keyframe_codec == "auto" and dnerv.time_budget == nerv.time_budget == 30
    assert nerv.epochs == rd.LARGE_EPOCHS and config.options("h264").crf is None
    assert rd.StudyConfig(codecs=("dnerv",), levels=(0.2,), time_budget=30, keyframe_codec="av1-seq"
                          ).options("dnerv").keyframe_codec == "av1-seq"


def test_unreachable_cells_are_kept_and_failed_ones_retried(tmp_path, monkeypatch):
    calls: list[float] = []

    def fake_build(source, output, codec, options, *, target_bpp, **kwargs):
        calls.append(target_bpp)
        if target_bpp == 0.1:
            raise CodecError("target 0.1 bpp is below the lowest rate reachable")
        raise ValueError("the disk said no")

    monkeypatch.setattr("nvrloader.build.build_archive", fake_build)
    config = rd.StudyConfig(codecs=("h264",), levels=(0.1, 0.2), time_budget=5, device="cpu")
    first = rd.run_builds(config, tmp_path, progress=False)
    assert [(e["status"], e["reused"]) for e in first] == [("unreachable", False), ("failed", False)]
    assert "the disk said no" in first[1]["message"]
    second = rd.run_builds(config, tmp_path, progress=False)
    assert calls == [0.1, 0.2, 0.2]           # the unreachable target is not tried again, the failure is
    assert [(e["status"], e["reused"]) for e in second] == [("unreachable", True), ("failed", False)]
    rd.run_builds(config, tmp_path, rebuild=("h264",), progress=False)
    assert calls == [0.1, 0.2, 0.2, 0.1, 0.2]


def test_an_interrupted_fit_resumes_only_with_its_own_settings(tmp_path, monkeypatch):
    seen: dict[str, bool] = {}

    def fake_build(source, output, codec, options, *, resume, **kwargs):
        seen[Path(output).name] = resume
        assert not Path(str(output) + ".ckpt").exists() or resume   # a foreign checkpoint is gone first
        raise CodecError("stop here")

    monkeypatch.setattr("nvrloader.build.build_archive", fake_build)
    config = rd.StudyConfig(codecs=("nerv",), levels=(0.1, 0.2), time_budget=5, device="cpu")
    same, other = rd.cells(config, tmp_path)
    for cell, settings in ((same, rd.settings(config, same)), (other, {"codec": "nerv", "old": True})):
        cell.checkpoint.mkdir(parents=True)
        cell.record.write_text(json.dumps({"settings": settings, "status": "running"}))
    rd.run_builds(config, tmp_path, progress=False)
    assert seen == {"nerv_0.1bpp.nvr": True, "nerv_0.2bpp.nvr": False}
    assert not same.checkpoint.exists() and not other.checkpoint.exists()   # settled cells keep no checkpoint
    same.checkpoint.mkdir()
    same.record.write_text(json.dumps({"settings": rd.settings(config, same), "status": "running"}))
    rd.run_builds(config, tmp_path, rebuild=("nerv",), progress=False)
    assert seen["nerv_0.1bpp.nvr"] is False                                 # --rebuild starts afresh


def test_real_h264_cells_resume_and_changed_settings_rebuild(synth_root, tmp_path):
    config = rd.StudyConfig(codecs=("h264",), levels=(5.0, 500.0), time_budget=5, source=synth_root,
                            frames=FrameSpec(fps=2, resolution=(48, 64), subset="test"), device="cpu",
                            cache_dir=tmp_path / "cache")
    first = rd.run_study(config, tmp_path / "study", progress=False)
    done, unreachable = first["builds"]
    assert done["status"] == "done" and abs(done["summary"]["bpp"] / 5.0 - 1) <= 0.05
    assert unreachable["status"] == "unreachable" and "above the highest rate" in unreachable["message"]
    assert all((tmp_path / "study" / name).exists() for name in OUTPUTS)
    archive = Path(done["archive"])
    stamp = archive.stat().st_mtime_ns
    notes: list[str] = []
    again = rd.run_builds(config, tmp_path / "study", progress=False, note=notes.append)
    assert [e["reused"] for e in again] == [True, True] and archive.stat().st_mtime_ns == stamp
    assert again[0]["summary"]["bpp"] == done["summary"]["bpp"] and len(notes) == 2
    cell = rd.Cell("h264", 5.0, tmp_path / "study" / "builds")
    other = dict(rd.settings(config, cell), frames={**rd.settings(config, cell)["frames"], "fps": 4.0})
    assert rd.finished(rd.read_record(cell), rd.settings(config, cell), cell)
    assert not rd.finished(rd.read_record(cell), other, cell)
    archive.unlink()                          # a record whose archive is gone is built again
    assert not rd.finished(rd.read_record(cell), rd.settings(config, cell), cell)


@pytest.mark.slow
def test_study_command_end_to_end_with_dnerv_and_resume(synth_root, tmp_path):
    """h264 and a tiny D-NeRV (5 s of fitting) at 2 levels on the 16 tiny videos: four outputs, deltas, resume."""
    out = tmp_path / "rd"
    argv = ["rd", str(synth_root), "--codecs", "h264,dnerv", "--bpp", "3,5", "--time-budget", "5",
            "--fps", "2", "--resolution", "64x80", "--device", "cpu", "--cache-dir", str(tmp_path / "cache"),
            "-o", str(out)]
    assert cli.main(argv) == 0
    assert all((out / name).exists() for name in OUTPUTS)
    study = json.loads((out / "results.json").read_text())
    assert study["command"].startswith("python -m nvrloader.study rd ") and study["wall_seconds"] > 0
    assert [(b["codec"], b["status"]) for b in study["builds"]] == [("h264", "done")] * 2 + [("dnerv", "done")] * 2
    fits = [b["summary"] for b in study["builds"] if b["codec"] == "dnerv"]
    assert all(f["stopped_early"] and 5 <= f["train_seconds"] < 60 for f in fits)   # equal fit time, budget-bound
    bd = study["deltas"]["dnerv"]["bd_psnr"]
    assert (bd["value"] is not None and bd["fit"] == "linear") or "do not overlap" in bd["note"]
    assert "| dnerv |" in (out / "table.md").read_text()
    stamps = {p: p.stat().st_mtime_ns for p in (out / "builds").glob("*.nvr")}
    assert len(stamps) == 4 and not list((out / "builds").glob("*.ckpt"))

    assert cli.main(argv) == 0                                # everything reused
    again = json.loads((out / "results.json").read_text())
    assert all(b["reused"] for b in again["builds"]) and again["deltas"] == study["deltas"]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    assert cli.main([*argv, "--rebuild", "h264"]) == 0      # one codec again, the other kept
    rebuilt = {p.name for p in stamps if p.stat().st_mtime_ns != stamps[p]}
    assert rebuilt == {"h264_3bpp.nvr", "h264_5bpp.nvr"}


def test_variants_change_options_of_one_codec():
    from nvrloader.study.rd import Cell, StudyConfig, parse_variant

    assert parse_variant("dnerv:rgb_residual=false+fusion=concat") == ("dnerv", {"rgb_residual": False,
                                                                                 "fusion": "concat"})
    config = StudyConfig(codecs=("dnerv", "dnerv:rgb_residual=false"), levels=(0.3,), time_budget=5)
    plain, ablated = config.options("dnerv"), config.options("dnerv:rgb_residual=false")
    assert plain.rgb_residual is None and ablated.rgb_residual is False and ablated.time_budget == 5
    assert Cell("dnerv:rgb_residual=false", 0.3, Path("b")).name == "dnerv-rgb_residualfalse_0.3bpp"
    for bad, message in (("dnerv:colour=1", "no option 'colour'"), ("dnerv:gtmlp=maybe", "expected true or false"),
                         ("h264:crf", "key=value"), ("vp9", "unknown codec")):
        with pytest.raises(ValueError, match=message):
            StudyConfig(codecs=(bad,), levels=(0.3,), time_budget=5)
