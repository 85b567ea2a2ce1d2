"""D-NeRV's flow prior: optical flow between the decoded keyframes, added to every flow head."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nvrloader.models import create_model
from nvrloader.models.flow_prior import frame_flows, next_keyframe_flows


def texture(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A smooth random colour texture [3, h, w] in [0, 1]: blurred noise, features of a few pixels."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(1, 3, h // 4, w // 4, generator=g)
    return F.interpolate(noise, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)[0]


def moving(frames: int, dx: int, dy: int, h: int = 64, w: int = 80) -> torch.Tensor:
    """[frames, 3, h, w]: a window moving over a larger texture by (dx, dy) pixels a frame, so the
    content moves by (-dx, -dy) in the image."""
    pad = 4 + max(abs(dx), abs(dy)) * frames
    big = texture(h + 2 * pad, w + 2 * pad)
    return torch.stack([big[:, pad + i * dy:pad + i * dy + h, pad + i * dx:pad + i * dx + w] for i in range(frames)])


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10((a - b).square().mean()))


def test_keyframe_flows_recover_a_translation_both_ways():
    clip = moving(2, dx=3, dy=-2)
    flows = next_keyframe_flows(torch.cat([clip, clip[-1:]]))
    assert flows.shape == (3, 4, 64, 80) and flows.dtype == torch.float32
    inner = flows[0, :, 8:-8, 8:-8].flatten(1).median(dim=1).values
    # keyframe 0 at p shows what keyframe 1 shows at p - (3, -2): the window moved by (3, -2)
    torch.testing.assert_close(inner, torch.tensor([-3.0, 2.0, 3.0, -2.0]), atol=0.25, rtol=0)
    assert flows[1].abs().max() < 0.25        # identical keyframes: no motion
    assert torch.count_nonzero(flows[2]) == 0  # the last keyframe has no next one


def test_frame_flows_interpolate_between_the_keyframes():
    pair = torch.randn(3, 4, 5, 6)
    t = torch.tensor([0.0, 0.5, 1.0])
    out = frame_flows(pair, t)
    torch.testing.assert_close(out[0, :2], torch.zeros(2, 5, 6))     # at the start keyframe: itself
    torch.testing.assert_close(out[0, 2:], pair[0, :2])              # ... and the flow to the end one
    torch.testing.assert_close(out[2, :2], pair[2, 2:])
    torch.testing.assert_close(out[2, 2:], torch.zeros(2, 5, 6))
    torch.testing.assert_close(out[1], torch.cat([(pair[1, 2:] - pair[1, :2]) / 4, (pair[1, :2] - pair[1, 2:]) / 4]))


def test_an_untrained_model_with_the_prior_is_motion_compensated_interpolation():
    """Zero-initialised heads: the prior is the whole flow, so frames between moving keyframes come out
    close to the truth, where the plain model blends two shifted images."""
    clip = moving(5, dx=1, dy=1)    # 4 pixels each way between the keyframes (8 is beyond DIS at 64x80)
    batch = {"t": torch.linspace(0, 1, 4)[None], "offset": torch.arange(4.0)[None], "span": torch.tensor([4.0]),
             "keyframes": clip[[0, 4]][None]}
    torch.manual_seed(0)
    with torch.no_grad():
        prior = create_model("dnerv", "tiny", clip_len=4)(batch)[0]
        plain = create_model("dnerv", "tiny", clip_len=4, flow_prior=False)(batch)[0]
    inner = (slice(None), slice(8, -8), slice(8, -8))
    gain = [psnr(prior[i][inner], clip[i][inner]) - psnr(plain[i][inner], clip[i][inner]) for i in range(1, 4)]
    assert min(gain) > 6, gain


def test_prior_flows_follow_the_keyframes_into_the_cached_pyramid():
    """A video's pyramid (keyframes in order, as a decoder caches it) gives each clip the flows a clip
    batch (start, end per clip, as training feeds it) computes."""
    model = create_model("dnerv", "tiny").eval()
    video = moving(3, dx=2, dy=0)
    with torch.no_grad():
        cached = model.encode_keyframes(video)
        batched = model.encode_keyframes(video[[0, 1, 1, 2]], pairs=True)
    assert len(cached) == len(model.stages) + 2
    torch.testing.assert_close(batched[-1][0::2], cached[-1][:2])
    assert torch.count_nonzero(batched[-1][1::2]) == 0    # end rows: not measured


def test_the_prior_needs_flow_heads():
    with pytest.raises(ValueError, match="flow_prior needs flow"):
        create_model("dnerv", "tiny", flow=False)
    assert not create_model("dnerv", "tiny", flow=False, flow_prior=False).flow_prior
