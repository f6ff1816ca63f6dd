import time

import numpy as np
import pytest

from data_tools.frames import to_frames
from data_tools.simulate import dvs_batch, dvs_events, saccade_events, saccade_path, shift_video

EPS = 0.3


def ramp_video(dL, n=2, shape=(1, 1), start=0.2):
    """Frames whose log intensity log(eps + I) rises linearly by dL in total over n frames."""
    L = np.log(EPS + start) + np.linspace(0, dL, n)
    return np.exp(L)[:, None, None] * np.ones(shape) - EPS


def test_static_video_gives_no_events():
    rng = np.random.default_rng(0)
    video = np.repeat(rng.random((1, 8, 9)), 20, axis=0)
    assert len(dvs_events(video, np.arange(20) * 1000, rng)) == 0


def test_brightening_only_on_darkening_only_off():
    video = np.concatenate([np.full((3, 4, 5), 0.2), np.full((3, 4, 5), 0.8)])
    times = np.arange(6) * 5000
    on = dvs_events(video, times, np.random.default_rng(0), sigma_C=0.0, refractory_us=0)
    # log(1.1) - log(0.5) = 0.788: floor(0.788 / 0.25) = 3 ON events per pixel, between frames 2 and 3
    assert len(on) == 3 * 20 and np.all(on["p"] == 1)
    assert on["t"].min() > 10_000 and on["t"].max() <= 15_000
    off = dvs_events(video[::-1], times, np.random.default_rng(0), refractory_us=0)
    assert len(off) > 0 and np.all(off["p"] == 0)


def test_event_count_grows_as_threshold_shrinks():
    img = np.zeros((28, 28))
    img[8:20, 10:18] = 1.0
    counts = [len(saccade_events(img, np.random.default_rng(0), C=c, sigma_C=0.0)[0]) for c in (0.5, 0.3, 0.15)]
    assert counts[0] < counts[1] < counts[2]


def test_event_times_interpolated_within_the_step():
    # L rises by 1.1 in one 1000 us step: levels 0.25, 0.5, 0.75, 1.0 are crossed at k·0.25/1.1 of the step
    ev = dvs_events(ramp_video(1.1), [0, 1000], np.random.default_rng(0), sigma_C=0.0, refractory_us=0)
    np.testing.assert_array_equal(ev["t"], [227, 455, 682, 909])
    # the same ramp sampled with 11 frames gives the same times (the model is exact on linear L)
    ev = dvs_events(ramp_video(1.1, 11), np.arange(11) * 100, np.random.default_rng(0), sigma_C=0.0,
                    refractory_us=0)
    np.testing.assert_array_equal(ev["t"], [227, 455, 682, 909])
    assert np.all(ev["p"] == 1) and np.all(ev["x"] == 0)


def test_reference_moves_by_crossed_levels():
    # up 0.6: ON at +0.25, +0.5 (ref -> 0.5); back down to 0: OFF at 0.25 and 0.0 (ref - C, ref - 2C),
    # i.e. 0.35/0.6 and 0.6/0.6 of the way down
    L = np.log(EPS + 0.2) + np.array([0.0, 0.6, 0.0])
    ev = dvs_events((np.exp(L) - EPS)[:, None, None], [0, 1000, 2000], np.random.default_rng(0),
                    sigma_C=0.0, refractory_us=0)
    np.testing.assert_array_equal(ev["p"], [1, 1, 0, 0])
    np.testing.assert_array_equal(ev["t"], [417, 833, 1583, 2000])


def test_refractory_period_respected():
    # crossings every 250 us; with a 600 us refractory period the pixel fires at 250, 1000, 1750, ...
    video = ramp_video(2.5, 11)
    ev = dvs_events(video, np.arange(11) * 250, np.random.default_rng(0), sigma_C=0.0, refractory_us=600)
    np.testing.assert_array_equal(ev["t"], [250, 1000, 1750, 2500])
    img = np.random.default_rng(1).random((28, 28))
    ev, _ = saccade_events(img, np.random.default_rng(0), refractory_us=1000)
    pix = ev["y"].astype(np.int64) * 34 + ev["x"]
    order = np.lexsort((ev["t"], pix))
    same = np.diff(pix[order]) == 0
    assert same.sum() > 1000 and np.diff(ev["t"][order])[same].min() >= 1000


def test_poisson_background_noise_rate():
    video = np.full((2, 50, 40), 0.5)
    ev = dvs_events(video, [0, 1_000_000], np.random.default_rng(0), noise_rate_hz=5.0)
    assert abs(len(ev) - 5.0 * 2000) < 4 * np.sqrt(10_000)
    assert 0.45 < ev["p"].mean() < 0.55 and ev["x"].max() == 39 and ev["y"].max() == 49


def test_batch_equals_single_runs_without_randomness():
    rng = np.random.default_rng(2)
    videos = rng.random((3, 6, 5, 7))
    times = np.arange(6) * 1000
    batch = dvs_batch(videos, times, np.random.default_rng(0), sigma_C=0.0)
    for v, b in zip(videos, batch):
        np.testing.assert_array_equal(dvs_events(v, times, np.random.default_rng(5), sigma_C=0.0), b)


def test_saccade_digit_events_on_edges_and_fast():
    from data_tools.datasets import digits_images
    img = digits_images()[0][0]
    t0 = time.perf_counter()
    ev, size = saccade_events(img, np.random.default_rng(0))
    assert time.perf_counter() - t0 < 0.1
    assert size == (34, 34, 2) and 2000 < len(ev) < 8000
    assert ev["t"].min() >= 0 and ev["t"].max() <= 315_000 and 0.4 < ev["p"].mean() < 0.6
    dx, dy, _ = saccade_path()
    logv = np.log(EPS + shift_video(img[None], dx, dy)[0])
    grad = np.hypot(*np.gradient(logv, axis=(1, 2))).mean(axis=0)        # path-mean |∇L| per pixel
    count = to_frames(ev, size, 1).sum(axis=(0, 1))
    assert np.corrcoef(grad.ravel(), count.ravel())[0, 1] > 0.85
    top = grad >= np.quantile(grad, 0.75)
    assert count[top].sum() > 0.6 * count.sum()                         # a quarter of the pixels: > 60%
    assert count[grad == 0].sum() == 0


def test_saccade_path_triangle():
    dx, dy, t = saccade_path(steps_per_leg=4)
    assert len(t) == 13 and t[-1] == 315_000 and t[4] == 105_000
    np.testing.assert_allclose([dx[4], dy[4], dx[8], dy[8], dx[12], dy[12]], [3.5, 7, 7, 0, 0, 0])


def test_bad_input_raises():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="video"):
        dvs_events(np.zeros((4, 4)), [0, 1], rng)
    with pytest.raises(ValueError, match="times_us"):
        dvs_events(np.zeros((2, 4, 4)), [5, 5], rng)
    with pytest.raises(ValueError, match="non-negative"):
        dvs_events(np.full((2, 4, 4), np.nan), [0, 1], rng)
    with pytest.raises(ValueError, match="image"):
        saccade_events(np.zeros((2, 28, 28)), rng)
