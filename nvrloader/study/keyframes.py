"""D-NeRV keyframe coding measured on its own: bytes against keyframe PSNR, one image at a time
against one stream per video (and per class), with Bjøntegaard deltas of each stream coding against
the same encoder's image coding and of everything against the first codec's images. Image-only
codecs (avif, png) are measured as images.

The keyframes are the ones a D-NeRV build codes (`keyframe_indices`: every clip boundary); PSNR
is the mean over all of them against the source frames; rate is keyframe bits over every frame's
pixels, i.e. the part of an archive's bpp the keyframes take.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from tqdm import tqdm

from nvrloader.study.bdrate import bd_quality, bd_rate

if TYPE_CHECKING:
    from nvrloader.framestore import FrameStore

# what one payload holds; "class-stream" is measured only (archives store per-video payloads). The
# codec modules load on first use, so the CLI's --help stays light.
CODINGS = ("image", "video-stream", "class-stream")


@dataclass(frozen=True)
class KeyframeSet:
    """The keyframes of every video, grouped as one stream per video or per class would code them."""

    frames: list[np.ndarray]       # per video, uint8 [K, H, W, 3]
    labels: list[int]
    pixels: int                    # of every frame of every video: the denominator of bpp

    @classmethod
    def of_store(cls, store: FrameStore, clip_len: int) -> KeyframeSet:
        from nvrloader.decode.layouts import keyframe_indices

        frames = [store.frames(v, keyframe_indices(store.num_frames(v), clip_len)) for v in range(len(store))]
        pixels = sum(store.num_frames(v) for v in range(len(store))) * store.height * store.width
        return cls(frames, [r.label for r in store.records], pixels)

    def groups(self, coding: str) -> list[np.ndarray]:
        """What each payload codes: a video's keyframes, or a class's videos' keyframes end to end."""
        if coding != "class-stream":
            return self.frames
        return [np.concatenate([f for f, lab in zip(self.frames, self.labels) if lab == label])
                for label in sorted(set(self.labels))]


def codec_name(codec: str, coding: str) -> str:
    """The keyframe codec name of an encoder under a coding ("av1", "video-stream" -> "av1-seq")."""
    from nvrloader.compress.images import SEQUENCE_SUFFIX

    return codec if coding == "image" else codec + SEQUENCE_SUFFIX


def measure(keyframes: KeyframeSet, codec: str, coding: str, quality: int) -> dict[str, Any]:
    """One RD point: every group coded and decoded as an archive would hold and read it."""
    import torch

    from nvrloader.compress import images
    from nvrloader.metrics import psnr

    name = codec_name(codec, coding)
    start = time.perf_counter()
    size, values = 0, []
    for group in keyframes.groups(coding):
        data = images.encode_keyframes(group, name, quality)
        decoded = images.decode_keyframes(data, name, len(group), group.shape[1:3])
        size += len(data)
        values.append(psnr(torch.from_numpy(decoded).permute(0, 3, 1, 2), torch.from_numpy(group).permute(0, 3, 1, 2)))
    return {"codec": codec, "coding": coding, "quality": quality, "bytes": size,
            "bpp": size * 8 / keyframes.pixels, "psnr": float(torch.cat(values).mean()),
            "seconds": round(time.perf_counter() - start, 2)}


def curve(points: list[dict[str, Any]], codec: str, coding: str) -> tuple[list[float], list[float]]:
    chosen = sorted((p["bpp"], p["psnr"]) for p in points if p["codec"] == codec and p["coding"] == coding)
    return [p[0] for p in chosen], [p[1] for p in chosen]


def deltas(points: list[dict[str, Any]], codecs: Sequence[str], codings: Sequence[str],
           anchor: tuple[str, str]) -> dict[str, dict[str, Any]]:
    """BD-rate and BD-PSNR of every (codec, coding) against ``anchor`` and against its codec's image coding."""
    out = {}
    for codec in codecs:
        for coding in codings:
            test = curve(points, codec, coding)
            if not test[0]:
                continue
            row = {}
            for ref_name, ref in (("vs_image", (codec, "image")), ("vs_anchor", anchor)):
                if ref == (codec, coding):
                    continue
                base = curve(points, *ref)
                row[ref_name] = {"bd_rate": bd_rate(*base, *test).as_dict(), "bd_psnr": bd_quality(*base, *test).as_dict()}
            out[f"{codec} {coding}"] = row
    return out


def run_keyframe_study(store: FrameStore, codecs: Sequence[str], codings: Sequence[str], qualities: Sequence[int],
                       clip_len: int = 8, progress: bool = True) -> dict[str, Any]:
    """Every codec x coding x quality point, and the deltas against the first codec's image coding."""
    from nvrloader.compress.images import KEYFRAME_CODECS

    keyframes = KeyframeSet.of_store(store, clip_len)
    cells = [(c, m, q) for c in codecs for m in codings for q in qualities if codec_name(c, m) in KEYFRAME_CODECS]
    points = [measure(keyframes, c, m, q) for c, m, q in tqdm(cells, desc="keyframe RD points", disable=not progress)]
    anchor = (codecs[0], "image")
    return {"videos": len(store), "classes": len(set(keyframes.labels)),
            "keyframes": sum(map(len, keyframes.frames)), "frames": int(keyframes.pixels // (store.height * store.width)),
            "height": store.height, "width": store.width, "fps": store.fps, "clip_len": clip_len,
            "codecs": list(codecs), "codings": list(codings), "qualities": list(qualities),
            "anchor": " ".join(anchor), "points": points,
            "deltas": deltas(points, codecs, codings, anchor)}


def _delta(entry: dict[str, Any] | None, key: str, unit: str) -> str:
    if not entry or entry[key]["value"] is None:
        return "n/a"
    return f"{entry[key]['value']:+.1f}{unit}" if unit == " %" else f"{entry[key]['value']:+.2f}{unit}"


def title(study: dict[str, Any]) -> str:
    return (f"{study['dataset']}: {study['videos']} videos, {study['height']}x{study['width']}, "
            f"{study['fps']:g} fps, {study['keyframes']} keyframes (clip {study['clip_len']})")


def table_markdown(study: dict[str, Any]) -> str:
    """Points per quality, then the deltas."""
    lines = [f"Keyframe coding: {title(study)}", "",
             "| codec | coding | quality | bytes | keyframe bpp | PSNR (dB) | seconds |", "|---|---|---|---|---|---|---|"]
    for p in study["points"]:
        lines.append(f"| {p['codec']} | {p['coding']} | {p['quality']} | {p['bytes']} | {p['bpp']:.4f} | "
                     f"{p['psnr']:.2f} | {p['seconds']:.1f} |")
    lines += ["", f"| codec, coding | BD-rate vs image | BD-PSNR vs image | BD-rate vs {study['anchor']} | "
              f"BD-PSNR vs {study['anchor']} |", "|---|---|---|---|---|"]
    for name, row in study["deltas"].items():
        lines.append(f"| {name} | {_delta(row.get('vs_image'), 'bd_rate', ' %')} | "
                     f"{_delta(row.get('vs_image'), 'bd_psnr', ' dB')} | {_delta(row.get('vs_anchor'), 'bd_rate', ' %')} "
                     f"| {_delta(row.get('vs_anchor'), 'bd_psnr', ' dB')} |")
    return "\n".join(lines) + "\n"


def plot(study: dict[str, Any], path: Path) -> Path:
    """Keyframe PSNR over keyframe bpp, one line per codec and coding."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nvrloader.reporting import finish_plot

    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {"image": "-", "video-stream": "--", "class-stream": ":"}
    for i, codec in enumerate(study["codecs"]):
        for coding in study["codings"]:
            rate, quality = curve(study["points"], codec, coding)
            if not rate:
                continue
            delta = _delta(study["deltas"][f"{codec} {coding}"].get("vs_image"), "bd_rate", " %")
            label = f"{codec} {coding}" + ("" if coding == "image" else f" (BD-rate vs image {delta})")
            ax.plot(rate, quality, styles.get(coding, "-"), marker="os^"[i % 3], color=f"C{i}", label=label)
    ax.set_xscale("log")
    return finish_plot(fig, ax, path, "keyframe bits per pixel of all frames (log scale)",
                       "keyframe PSNR (dB, mean over keyframes)", f"Keyframe coding: {title(study)}", 8, 7)


def write_outputs(study: dict[str, Any], out: Path) -> list[Path]:
    """results.json, table.md and keyframes_rd.png under ``out``."""
    from nvrloader.reporting import write_json, write_text

    return [write_json(out / "results.json", study), write_text(out / "table.md", table_markdown(study)),
            plot(study, out / "keyframes_rd.png")]
