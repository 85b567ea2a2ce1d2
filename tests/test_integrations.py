"""Loading helpers for other conventions: variable-length batches and pytorchvideo's sample dicts."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from nvrloader import build
from nvrloader.dataset import NVRDataset, pad_collate


@pytest.fixture(scope="module")
def archive(synth_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("integrations")
    path = out / "raw.nvr"
    assert build.main([str(synth_root), "--resolution", "48x64", "--fps", "4", "--codec", "raw", "--no-eval",
                       "--cache-dir", str(out / "cache"), "-o", str(path)]) == 0
    return path


def test_pad_collate_batches_whole_videos_of_different_lengths(archive):
    ds = NVRDataset(archive, split="all", sampling="all", device="cpu")
    lengths = [v.num_frames for v in ds.decoder.metadata.videos]
    assert len(set(lengths)) > 1
    clips, got, labels = next(iter(DataLoader(ds, batch_size=len(ds), collate_fn=pad_collate)))
    assert got.tolist() == lengths and clips.shape[1] == max(lengths) and labels.tolist() == ds.labels
    short = lengths.index(min(lengths))
    assert torch.equal(clips[short, :min(lengths)], ds[short][0]) and clips[short, min(lengths):].eq(0).all()


def test_pytorchvideo_transforms_run_on_archive_clips(archive):
    pytest.importorskip("pytorchvideo", exc_type=ImportError)
    from nvrloader.integrations.pytorchvideo import PyTorchVideoDataset, collate_samples, import_pytorchvideo

    T = import_pytorchvideo()
    from torchvision.transforms import Compose

    transform = T.ApplyTransformToKey("video", Compose([T.Normalize((0.45,) * 3, (0.225,) * 3),
                                                        T.ShortSideScale(32)]))
    ds = PyTorchVideoDataset(NVRDataset(archive, split="all", num_segments=4, device="cpu", return_info=True),
                             transform)
    batch = next(iter(DataLoader(ds, batch_size=3, collate_fn=collate_samples)))
    assert batch["video"].shape == (3, 3, 4, 32, 42)
    assert batch["label"].tolist() == ds.dataset.labels[:3] and len(batch["video_name"]) == 3
    plain = NVRDataset(archive, split="all", num_segments=4, device="cpu", return_info=True)
    assert abs(batch["video"][0].mean().item() - ((plain[0][0].float() / 255 - 0.45) / 0.225).mean().item()) < 0.05
    with pytest.raises(ValueError, match="return_info=True"):
        PyTorchVideoDataset(NVRDataset(archive, split="all", device="cpu"))
