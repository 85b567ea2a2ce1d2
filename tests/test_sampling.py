"""TSN / dense / all frame sampling, checked against TSM's definition."""
import numpy as np
import pytest
import torch

from nvrloader.sampling import dense_indices, sample_indices, tsn_indices


def test_tsn_eval_takes_segment_centres():
    # 80 frames, 8 segments of 10: centres at 5, 15, ..., 75
    np.testing.assert_array_equal(tsn_indices(80, 8), np.arange(8) * 10 + 5)


def test_tsn_train_offsets_stay_inside_their_segment():
    torch.manual_seed(0)
    seen = set()
    for _ in range(200):
        idx = tsn_indices(80, 8, random_offset=True)
        assert np.all(idx // 10 == np.arange(8))
        seen.update(idx.tolist())
    assert len(seen) > 60  # offsets really vary


def test_tsn_short_video_repeats_frames_in_order():
    idx = tsn_indices(3, 8)
    assert len(idx) == 8 and set(idx.tolist()) == {0, 1, 2}
    assert np.all(np.diff(idx) >= 0)


def test_tsn_frames_per_segment_are_consecutive():
    idx = tsn_indices(40, 4, frames_per_segment=3).reshape(4, 3)
    assert np.all(np.diff(idx, axis=1) == 1)
    assert idx.max() <= 39


def test_dense_window_and_padding():
    np.testing.assert_array_equal(dense_indices(20, 8), np.arange(6, 14))
    np.testing.assert_array_equal(dense_indices(5, 8), [0, 1, 2, 3, 4, 4, 4, 4])


def test_sampling_is_deterministic_for_a_torch_seed():
    torch.manual_seed(3)
    a = [tsn_indices(50, 8, random_offset=True) for _ in range(5)]
    torch.manual_seed(3)
    b = [tsn_indices(50, 8, random_offset=True) for _ in range(5)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_unknown_sampling_is_refused():
    with pytest.raises(ValueError, match="unknown sampling"):
        sample_indices("random", 10, 8, 1, False)
    np.testing.assert_array_equal(sample_indices("all", 4, 8, 1, False), np.arange(4))
