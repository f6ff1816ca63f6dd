import numpy as np
import pytest

from data_tools import augment as A
from data_tools.events import EVENT_DTYPE, make_events, validate

SIZE = (40, 30, 2)


def random_events(n=20_000, seed=0, size=SIZE):
    rng = np.random.default_rng(seed)
    return make_events(rng.integers(0, size[0], n), rng.integers(0, size[1], n), rng.integers(0, 10**6, n),
                       rng.integers(0, 2, n))


def geometric_ops(rng):
    return {
        "flip_x": lambda e: A.flip_x(e, SIZE), "flip_y": lambda e: A.flip_y(e, SIZE),
        "rotate": lambda e: A.rotate(e, SIZE, 33.0), "translate": lambda e: A.translate(e, SIZE, 5, -7),
        "shear_x": lambda e: A.shear_x(e, SIZE, 0.3), "shear_y": lambda e: A.shear_y(e, SIZE, -0.3),
        "scale": lambda e: A.scale(e, SIZE, 1.4), "cutout": lambda e: A.cutout(e, SIZE, 0.4, 1.2, rng),
        "drop_random": lambda e: A.drop_random(e, 0.3, rng), "drop_by_time": lambda e: A.drop_by_time(e, 0.3, rng),
        "drop_by_area": lambda e: A.drop_by_area(e, SIZE, 0.3, rng), "nda": lambda e: A.random_nda(e, SIZE, rng),
        "eventdrop": lambda e: A.random_eventdrop(e, SIZE, rng),
    }


@pytest.mark.parametrize("name", list(geometric_ops(None)))
def test_dtype_order_bounds(name):
    ev = random_events()
    out = geometric_ops(np.random.default_rng(1))[name](ev)
    assert out.dtype == EVENT_DTYPE
    validate(out, SIZE)                                    # sorted by t, inside the sensor
    assert 0 < len(out) <= len(ev)
    assert len(geometric_ops(np.random.default_rng(1))[name](ev[:0])) == 0     # empty stays empty


def test_flip_twice_is_identity_and_flip_maps_pixels():
    ev = random_events(500)
    np.testing.assert_array_equal(A.flip_x(A.flip_x(ev, SIZE), SIZE), ev)
    np.testing.assert_array_equal(A.flip_y(A.flip_y(ev, SIZE), SIZE), ev)
    np.testing.assert_array_equal(A.flip_x(ev, SIZE)["x"], 39 - ev["x"])
    np.testing.assert_array_equal(A.flip_y(ev, SIZE)["y"], 29 - ev["y"])


def test_rotate_zero_and_translate_zero_are_identity():
    ev = random_events(500)
    np.testing.assert_array_equal(A.rotate(ev, SIZE, 0.0), ev)
    np.testing.assert_array_equal(A.translate(ev, SIZE, 0, 0), ev)
    np.testing.assert_array_equal(A.scale(ev, SIZE, 1.0), ev)
    np.testing.assert_array_equal(A.shear_x(ev, SIZE, 0.0), ev)


def test_rotate_90_about_a_point_on_hand_data():
    ev = make_events([12, 10], [10, 13], [0, 1], [1, 0])
    out = A.rotate(ev, SIZE, 90, center=(10, 10))         # (x-cx, y-cy) -> (-(y-cy), x-cx)
    np.testing.assert_array_equal(out["x"], [10, 7])
    np.testing.assert_array_equal(out["y"], [12, 10])
    # default centre = bounding-box centre (11, 11.5): 180 degrees swaps the two corners
    np.testing.assert_array_equal(A.rotate(ev, SIZE, 180)[["x", "y"]], ev[["x", "y"]][::-1])


def test_translate_drops_events_leaving_the_sensor():
    ev = make_events([0, 35, 39], [0, 5, 29], [0, 1, 2], [1, 1, 0])
    out = A.translate(ev, SIZE, 3, 0)
    np.testing.assert_array_equal(out["x"], [3, 38])
    np.testing.assert_array_equal(out["t"], [0, 1])


def test_shear_and_scale_on_hand_data():
    ev = make_events([10, 10], [10, 20], [0, 1], [1, 1])
    out = A.shear_x(ev, SIZE, 0.5, center=(0, 10))
    np.testing.assert_array_equal(out["x"], [10, 15])
    out = A.scale(ev, SIZE, 2.0, center=(10, 10))
    np.testing.assert_array_equal(out["y"], [10])                # y = 30 leaves the 30-row sensor


@pytest.mark.parametrize("ratio", [0.1, 0.5])
def test_drop_ratios_match_magnitude(ratio):
    ev = random_events(40_000)
    rng = np.random.default_rng(7)
    kept = [len(A.drop_random(ev, ratio, rng)) / len(ev) for _ in range(20)]
    assert abs(1 - np.mean(kept) - ratio) < 0.01
    kept = [len(A.drop_by_time(ev, ratio, rng)) / len(ev) for _ in range(20)]
    assert abs(1 - np.mean(kept) - ratio) < 0.01                  # uniform t: the window holds `ratio`
    kept = [len(A.drop_by_area(ev, SIZE, ratio, rng)) / len(ev) for _ in range(200)]
    # a W·r x H·r box (area r², EventDrop's), centre uniform, clipped: E[dropped] = (r - r²/4)² for uniform x, y
    assert abs(1 - np.mean(kept) - (ratio - ratio ** 2 / 4) ** 2) < 0.1 * ratio ** 2


def test_drop_by_time_removes_one_contiguous_window():
    ev = make_events(np.zeros(1001), np.zeros(1001), np.arange(1001) * 10, np.ones(1001))
    out = A.drop_by_time(ev, 0.25, np.random.default_rng(3))
    gaps = np.diff(out["t"])
    assert np.sum(gaps > 10) == 1 and 2490 <= gaps.max() <= 2510


def grid_events(size=SIZE):
    x, y = np.meshgrid(np.arange(size[0]), np.arange(size[1]))
    return make_events(x.ravel(), y.ravel(), np.arange(x.size), np.ones(x.size))


def test_cutout_box_size_and_placement():
    """Box W·a·s x H·a/s = 16 x 12 px, centred at a uniform point of the sensor and clipped to it (EventRPG's code):
    at most 192 pixels go, and on average (16 - 16²/(4·40))·(12 - 12²/(4·30)) = 155.5 (the clipped edges)."""
    ev, rng = grid_events(), np.random.default_rng(0)
    dropped = np.array([len(ev) - len(A.cutout(ev, SIZE, 0.4, 1.0, rng)) for _ in range(1000)])
    assert dropped.max() == 16 * 12 and dropped.min() < 16 * 12 / 2
    assert abs(dropped.mean() - 14.4 * 10.8) < 3


def test_rng_reproducibility():
    ev = random_events(5000)
    for name, op in geometric_ops(None).items():
        a = geometric_ops(np.random.default_rng(11))[name](ev)
        b = geometric_ops(np.random.default_rng(11))[name](ev)
        np.testing.assert_array_equal(a, b)
    outs = [A.random_nda(ev, SIZE, np.random.default_rng(s)) for s in range(12)]
    assert len({(len(o), int(o["x"].sum())) for o in outs}) > 5          # different draws, different ops


def nda_draws(ev, op, n=300):
    return [A.random_nda(ev, SIZE, np.random.default_rng(s), ops=(op,)) for s in range(n)]


def test_random_nda_magnitudes():
    """Each op's magnitude, read back from hand-made events over 300 draws: inside EventRPG's range and reaching
    near both of its ends (rotation ±60°, scale 0.5-1.5, translate and aspect-scaled shear ±0.3, cutout a ≤ 0.5)."""
    two = make_events([8, 32], [15, 15], [0, 1], [1, 1])              # box centre (20, 15), 24 px apart
    ang = [np.degrees(np.arctan2(np.diff(o["y"].astype(float))[0], np.diff(o["x"].astype(float))[0]))
           for o in nda_draws(two, "rotate") if len(o) == 2]
    assert max(np.abs(ang)) < 62 and min(ang) < -50 and max(ang) > 50
    near = make_events([14, 26], [15, 15], [0, 1], [1, 1])
    f = [np.diff(o["x"].astype(float))[0] / 12 for o in nda_draws(near, "scale")]
    assert 0.5 - 1 / 12 <= min(f) < 0.6 and 1.4 < max(f) <= 1.5 + 1 / 12
    # translate: int(m·(W - c)) right, int(m·c) left of the box centre c = 15: shifts in [-4, 7]
    dx = [int(o["x"][0]) - 10 for o in nda_draws(make_events([10, 20], [5, 6], [0, 1], [1, 1]), "translate_x")
          if len(o) == 2]
    assert min(dx) == -4 and max(dx) == 7
    # shear_x on a 30 x 10 box: m·(30/10) ∈ [-0.9, 0.9]; the corner (5, 20) moves by m·3·(20 - 15)
    box = make_events([5, 35, 5, 35], [10, 10, 20, 20], [0, 1, 2, 3], [1, 1, 1, 1])
    m = [(int(o["x"][o["t"] == 2][0]) - 5) / 5 for o in nda_draws(box, "shear_x")]
    assert max(np.abs(m)) <= 0.9 + 0.1 and min(m) < -0.7 and max(m) > 0.7
    gone = [1 - len(o) / 1200 for o in nda_draws(grid_events(), "cutout")]   # box area W·H·a² ≤ 0.25 W·H
    assert max(gone) <= 0.25 and max(gone) > 0.15 and min(gone) > 0
    with pytest.raises(ValueError, match="unknown NDA op"):
        A.random_nda(two, SIZE, np.random.default_rng(0), ops=("warp",))


def test_random_eventdrop_draws_eventdrops_ops_and_magnitudes(monkeypatch):
    calls = []
    for name in ("drop_by_time", "drop_random"):
        monkeypatch.setattr(A, name, lambda e, r, rng, name=name: calls.append((name, r)) or e[:len(e) // 2])
    monkeypatch.setattr(A, "drop_by_area", lambda e, size, r, rng: calls.append(("drop_by_area", r)) or e[:0])
    ev = random_events(100)
    outs = [A.random_eventdrop(ev, SIZE, np.random.default_rng(s)) for s in range(800)]
    ratios = {n: sorted({r for m, r in calls if m == n}) for n in ("drop_by_time", "drop_random", "drop_by_area")}
    assert ratios["drop_by_time"] == ratios["drop_random"] == [k / 10 for k in range(1, 10)]
    assert ratios["drop_by_area"] == [k / 20 for k in range(1, 6)]
    counts = [sum(m == n for m, _ in calls) for n in ("drop_by_time", "drop_random", "drop_by_area")]
    assert all(150 < c < 250 for c in counts + [800 - len(calls)])      # identity and the three drops, 1/4 each
    assert sum(len(o) == 100 for o in outs) == 800 - sum(counts[:2])     # an emptied stream comes back whole


def test_bad_magnitudes_raise():
    ev, rng = random_events(100), np.random.default_rng(0)
    for call in (lambda: A.drop_random(ev, 1.5, rng), lambda: A.drop_by_time(ev, -0.1, rng),
                 lambda: A.drop_by_area(ev, SIZE, 2.0, rng), lambda: A.cutout(ev, SIZE, 1.2, 1.0, rng)):
        with pytest.raises(ValueError, match="ratio"):
            call()
    with pytest.raises(ValueError, match="aspect"):
        A.cutout(ev, SIZE, 0.3, 0.0, rng)
    with pytest.raises(ValueError, match="outside"):
        A.flip_x(ev, (10, 10, 2))
