"""TSM's clip augmentation as batched tensor ops, so it runs on the device the archive decodes to.

Every frame of a clip gets the same crop and flip (TSM's Group* transforms); clips of a batch get
their own. Crop + resize is one `roi_align` call for the whole batch: each output pixel averages
the source pixels under it, i.e. an area-style resize of any box to the network's input size.
"""
from __future__ import annotations

import torch
from torchvision.ops import roi_align

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TSM_SCALES = (1.0, 0.875, 0.75, 0.66)
# TSM's 13 candidate crop corners ("more_fix_crop") in quarters of the free space: corners, centre,
# edge midpoints, quarter points
OFFSET_GRID = ((0, 0), (4, 0), (0, 4), (4, 4), (2, 2), (0, 2), (4, 2), (2, 4), (2, 0),
               (1, 1), (3, 1), (1, 3), (3, 3))


def fixed_offsets(image_w: int, image_h: int, crop_w: int, crop_h: int) -> list[tuple[int, int]]:
    """Top-left corners of the OFFSET_GRID crops, in pixels."""
    ws, hs = (image_w - crop_w) // 4, (image_h - crop_h) // 4
    return [(i * ws, j * hs) for i, j in OFFSET_GRID]


def multiscale_crop_boxes(n: int, height: int, width: int, input_size: int,
                          scales: tuple[float, ...] = TSM_SCALES, max_distort: int = 1) -> torch.Tensor:
    """``n`` random crop boxes [n, 4] (x1, y1, x2, y2) as TSM's GroupMultiScaleCrop draws them.

    Crop side lengths are scales of the short side, width and height at most ``max_distort`` scale
    steps apart (mild aspect jitter); sizes within 3 px of the input size snap to it. Draws from
    torch's global generator, which the training loop seeds.
    """
    base = min(height, width)
    sizes = [int(base * s) for s in scales]
    sizes = [input_size if abs(s - input_size) < 3 else s for s in sizes]
    sizes = [min(s, base) for s in sizes]  # the snap must not outgrow a frame smaller than the input
    pairs = [(w, h) for i, h in enumerate(sizes) for j, w in enumerate(sizes) if abs(i - j) <= max_distort]
    boxes = torch.empty(n, 4)
    choice = torch.randint(len(pairs), (n,)).tolist()
    corner = torch.randint(len(OFFSET_GRID), (n,)).tolist()
    for k in range(n):
        w, h = pairs[choice[k]]
        x, y = fixed_offsets(width, height, w, h)[corner[k]]
        boxes[k] = torch.tensor([x, y, x + w, y + h], dtype=torch.float32)
    return boxes


def centre_crop_box(height: int, width: int, input_size: int, scale_size: int | None = None) -> torch.Tensor:
    """TSM's test view, resize short side to ``scale_size`` then centre-crop ``input_size``, as one box.

    ``scale_size`` defaults to input_size * 256 / 224, the ratio TSM uses (224 from 256).
    """
    scale_size = scale_size or input_size * 256 // 224
    side = input_size * min(height, width) / scale_size
    x, y = (width - side) / 2, (height - side) / 2
    return torch.tensor([x, y, x + side, y + side], dtype=torch.float32)


def crop_resize(clips: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Float clips [B, T, C, H, W] and one box per clip [B, 4] -> [B, T, C, size, size]."""
    b, t, c = clips.shape[:3]
    frames = clips.flatten(0, 1)
    per_frame = boxes.to(frames.device, frames.dtype).repeat_interleave(t, dim=0)
    rois = torch.cat([torch.arange(b * t, device=frames.device, dtype=frames.dtype)[:, None], per_frame], dim=1)
    out = roi_align(frames, rois, (size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    return out.view(b, t, c, size, size)


def _per_clip(draw: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Values drawn on the CPU (one per clip, so runs are the same on any device) as a [B,1,1,1,1] factor."""
    return draw.to(x.device, x.dtype).view(-1, 1, 1, 1, 1)


def jitter_colour(x: torch.Tensor, strength: float) -> torch.Tensor:
    """Brightness, contrast and saturation of each clip scaled by factors from [1 - s, 1 + s].

    One draw per clip, so every frame of a clip changes alike and motion is untouched; values in [0, 1].
    """
    b = x.shape[0]

    def factor() -> torch.Tensor:
        return _per_clip(1.0 + strength * (2.0 * torch.rand(b) - 1.0), x)

    x = x * factor()
    mean = x.mean(dim=(1, 2, 3, 4), keepdim=True)
    x = (x - mean) * factor() + mean
    grey = x.mean(dim=2, keepdim=True)
    x = (x - grey) * factor() + grey
    return x.clamp(0.0, 1.0)


def shuffle_channels(x: torch.Tensor) -> torch.Tensor:
    """Each clip's RGB channels in a random order: a coarse hue change that keeps every edge and motion."""
    order = torch.rand(x.shape[0], 3).argsort(dim=1).to(x.device)
    return torch.gather(x, 2, order[:, None, :, None, None].expand_as(x))


def standardise_clips(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Zero mean and unit variance per clip and channel (over frames and pixels).

    Removes what a whole clip shares (exposure, contrast, colour cast), so a scene whose overall
    colours differ from every training scene does not shift the network's activations wholesale.
    """
    mean = x.mean(dim=(1, 3, 4), keepdim=True)
    std = x.std(dim=(1, 3, 4), keepdim=True)
    return (x - mean) / (std + eps)


class ClipTransform:
    """uint8 clips [B, T, 3, H, W] -> normalised float clips [B, T, 3, S, S] on the same device.

    Training: multi-scale crop + horizontal flip (per clip), optionally colour jitter and a random
    channel order. Evaluation: resize + centre crop. Normalisation: ImageNet mean/std (TSM's), or
    per clip (`clip_norm`).
    """

    def __init__(self, input_size: int = 224, scales: tuple[float, ...] = TSM_SCALES, flip: bool = True,
                 scale_size: int | None = None, colour_jitter: float = 0.0, channel_shuffle: bool = False,
                 clip_norm: bool = False) -> None:
        self.input_size, self.scales, self.flip, self.scale_size = input_size, scales, flip, scale_size
        self.colour_jitter, self.channel_shuffle, self.clip_norm = colour_jitter, channel_shuffle, clip_norm

    def __call__(self, clips: torch.Tensor, train: bool) -> torch.Tensor:
        if clips.ndim != 5 or clips.shape[2] != 3:
            raise ValueError(f"expected clips [B, T, 3, H, W], got {tuple(clips.shape)}")
        b, _, _, h, w = clips.shape
        x = clips.float().div_(255) if clips.dtype == torch.uint8 else clips.float()
        if train:
            boxes = multiscale_crop_boxes(b, h, w, self.input_size, self.scales)
        else:
            boxes = centre_crop_box(h, w, self.input_size, self.scale_size).expand(b, 4)
        x = crop_resize(x, boxes, self.input_size)
        if train and self.flip:
            flips = (torch.rand(b) < 0.5).to(x.device)
            x = torch.where(flips[:, None, None, None, None], x.flip(-1), x)
        if train and self.colour_jitter > 0:
            x = jitter_colour(x, self.colour_jitter)
        if train and self.channel_shuffle:
            x = shuffle_channels(x)
        if self.clip_norm:
            return standardise_clips(x)
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 1, 3, 1, 1)
        return (x - mean) / std
