import numpy as np
import pytest

from data_tools.events import make_events
from data_tools.frames import (downsample, downsample_events, frame_index, pad_crop, partition, to_frames,
                               to_frames_window)

SIZE = (5, 4, 2)   # W, H, P


def random_events(n, seed=0, size=SIZE, tmax=10_000):
    rng = np.random.default_rng(seed)
    return make_events(rng.integers(0, size[0], n), rng.integers(0, size[1], n), rng.integers(0, tmax, n),
                       rng.integers(0, 2, n))


@pytest.mark.parametrize("split_by", ["number", "time"])
@pytest.mark.parametrize("n", [0, 1, 7, 1000])
def test_total_count_and_shape(split_by, n):
    ev = random_events(n)
    f = to_frames(ev, SIZE, 6, split_by)
    assert f.shape == (6, 2, 4, 5) and f.dtype == np.float32
    assert f.sum() == n


def test_empty_stream_shape_is_T_P_H_W():
    ev = make_events([], [], [], [])
    assert to_frames(ev, (7, 3, 2), 4).shape == (4, 2, 3, 7)          # not tonic's (T, P, W, H)
    assert to_frames_window(ev, (7, 3, 2), 100).shape == (0, 2, 3, 7)


def test_number_split_puts_n_div_t_per_frame_remainder_last():
    ev = random_events(103)
    per_frame = to_frames(ev, SIZE, 10, "number").sum(axis=(1, 2, 3))
    np.testing.assert_array_equal(per_frame, [10] * 9 + [13])
    # fewer events than frames: all of them in the last frame
    np.testing.assert_array_equal(to_frames(random_events(3), SIZE, 5).sum(axis=(1, 2, 3)), [0, 0, 0, 0, 3])


def test_counts_land_at_t_p_y_x():
    ev = make_events([0, 4, 4, 2], [0, 3, 3, 1], [0, 1, 2, 3], [1, 0, 0, 1])
    f = to_frames(ev, SIZE, 2, "number")
    assert f[0, 1, 0, 0] == 1 and f[0, 0, 3, 4] == 1 and f[1, 0, 3, 4] == 1 and f[1, 1, 1, 2] == 1
    assert f.sum() == 4
    f1 = to_frames(ev, (5, 4, 1), 1)                                    # P = 1 merges polarities
    assert f1.shape == (1, 1, 4, 5) and f1[0, 0, 3, 4] == 2


def test_time_split_on_hand_data():
    # t spans 0..100, T = 4: bins [0,25) [25,50) [50,75) [75,100], the last event joins the last bin
    ev = make_events([0] * 7, [0] * 7, [0, 10, 24, 25, 60, 99, 100], [1] * 7)
    np.testing.assert_array_equal(frame_index(ev, 4, "time"), [0, 0, 0, 1, 2, 3, 3])
    np.testing.assert_array_equal(to_frames(ev, SIZE, 4, "time")[:, 1, 0, 0], [3, 1, 1, 2])
    ev0 = make_events([1, 2], [1, 1], [5, 5], [0, 1])                  # zero duration: all in frame 0
    np.testing.assert_array_equal(to_frames(ev0, SIZE, 3, "time").sum(axis=(1, 2, 3)), [2, 0, 0])


def test_fixed_window():
    ev = make_events([0] * 5, [0] * 5, [100, 149, 150, 260, 399], [0] * 5)
    f = to_frames_window(ev, SIZE, 50)
    assert f.shape == (6, 2, 4, 5)
    np.testing.assert_array_equal(f[:, 0, 0, 0], [2, 1, 0, 1, 0, 1])


def test_downsample_sums_and_matches_event_level():
    ev = random_events(500, seed=3)
    f = to_frames(ev, SIZE, 3)
    d = downsample(f, 2)
    assert d.shape == (3, 2, 2, 3) and d.sum() == 500
    assert d[0, 0, 0, 0] == f[0, 0, :2, :2].sum() and d[1, 1, 1, 2] == f[1, 1, 2:4, 4:].sum()
    ev2, size2 = downsample_events(ev, SIZE, 2)
    assert size2 == (3, 2, 2)
    np.testing.assert_array_equal(to_frames(ev2, size2, 3), d)


def test_pad_crop_centred():
    f = np.arange(2 * 4 * 6, dtype=np.float32).reshape(1, 2, 4, 6)
    c = pad_crop(f, (2, 2))
    np.testing.assert_array_equal(c, f[:, :, 1:3, 2:4])
    p = pad_crop(f, (6, 9))
    assert p.shape == (1, 2, 6, 9) and p.sum() == f.sum()
    np.testing.assert_array_equal(p[:, :, 1:5, 1:7], f)
    np.testing.assert_array_equal(pad_crop(p, (4, 6)), f)


def test_partition_is_first_T1_then_the_rest_in_time_order():
    f = np.arange(10, dtype=np.float32)[:, None, None, None] * np.ones((10, 2, 3, 3), np.float32)
    a, b = partition(f, 4)
    assert a.shape == (4, 2, 3, 3) and b.shape == (6, 2, 3, 3)
    np.testing.assert_array_equal(a[:, 0, 0, 0], [0, 1, 2, 3])          # the ANN's frames: the earliest events
    np.testing.assert_array_equal(b[:, 0, 0, 0], [4, 5, 6, 7, 8, 9])    # the SNN's: the rest, still in order
    ev = make_events(np.arange(12) % 4, np.zeros(12, int), np.arange(12) * 10, np.zeros(12, int))
    first, rest = partition(to_frames(ev, (4, 1, 2), 6), 4)             # eq. 1: T = T1 + T2 equal-count slices
    assert first.sum() == 8 and rest.sum() == 4 and rest[-1, 0, 0].tolist() == [0, 0, 1, 1]
    with pytest.raises(ValueError):
        partition(f, 11)


def test_bad_input_raises():
    ev = random_events(10)
    with pytest.raises(ValueError, match="split_by"):
        to_frames(ev, SIZE, 2, "count")
    with pytest.raises(ValueError, match="n_frames"):
        to_frames(ev, SIZE, 0)
    with pytest.raises(ValueError, match="outside"):
        to_frames(ev, (2, 2, 2), 2)
    with pytest.raises(ValueError):
        downsample(np.zeros((1, 1, 4, 4)), 1.5)
