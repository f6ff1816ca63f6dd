"""Event augmentations: NDA's geometric ops (Li et al. 2022) and EventDrop (Gu et al. 2021).

Events in, events out: same dtype, sorted by ``t``, every event inside the sensor (events moved off it
are dropped).  Geometric ops map each event's (x, y) and round to the nearest pixel; ``t`` and ``p``
are untouched, so the input order is kept.  Randomness only through an explicit ``rng``.
"""
import numpy as np

from .events import check_sensor_size, validate


def _remap(events, sensor_size, x, y):
    """Round the new float coordinates, drop events off the sensor, return a new event array."""
    w, h, _ = check_sensor_size(sensor_size)
    x, y = np.rint(x), np.rint(y)
    keep = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    out = events[keep]
    out["x"], out["y"] = x[keep], y[keep]
    return out


def _coords(events, sensor_size, center=None):
    """Validated float coordinates and the centre (default: the events' bounding-box centre)."""
    validate(events, sensor_size)
    x, y = events["x"].astype(np.float64), events["y"].astype(np.float64)
    if center is None:
        center = ((x.min() + x.max()) / 2, (y.min() + y.max()) / 2) if events.size else (0.0, 0.0)
    return x, y, center


def flip_x(events, sensor_size):
    """Horizontal flip: x' = W - 1 - x."""
    x, y, _ = _coords(events, sensor_size)
    return _remap(events, sensor_size, check_sensor_size(sensor_size)[0] - 1 - x, y)


def flip_y(events, sensor_size):
    """Vertical flip: y' = H - 1 - y."""
    x, y, _ = _coords(events, sensor_size)
    return _remap(events, sensor_size, x, check_sensor_size(sensor_size)[1] - 1 - y)


def rotate(events, sensor_size, degrees, center=None):
    """Rotate by θ about c: x' = cx + cosθ (x-cx) - sinθ (y-cy),  y' = cy + sinθ (x-cx) + cosθ (y-cy)."""
    x, y, (cx, cy) = _coords(events, sensor_size, center)
    th = np.deg2rad(degrees)
    c, s = np.cos(th), np.sin(th)
    return _remap(events, sensor_size, cx + c * (x - cx) - s * (y - cy), cy + s * (x - cx) + c * (y - cy))


def translate(events, sensor_size, dx, dy):
    """Shift by (dx, dy) pixels: x' = x + dx, y' = y + dy."""
    x, y, _ = _coords(events, sensor_size)
    return _remap(events, sensor_size, x + dx, y + dy)


def shear_x(events, sensor_size, m, center=None):
    """Horizontal shear about c: x' = x + m (y - cy)."""
    x, y, (_, cy) = _coords(events, sensor_size, center)
    return _remap(events, sensor_size, x + m * (y - cy), y)


def shear_y(events, sensor_size, m, center=None):
    """Vertical shear about c: y' = y + m (x - cx)."""
    x, y, (cx, _) = _coords(events, sensor_size, center)
    return _remap(events, sensor_size, x, y + m * (x - cx))


def scale(events, sensor_size, factor, center=None):
    """Zoom about c: x' = cx + f (x - cx), y' = cy + f (y - cy)."""
    x, y, (cx, cy) = _coords(events, sensor_size, center)
    return _remap(events, sensor_size, cx + factor * (x - cx), cy + factor * (y - cy))


def _check_ratio(name, value):
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")


def _drop_box(events, sensor_size, bw, bh, rng):
    """Drop the events inside a bw x bh box centred at a uniform point of the sensor and clipped to it, so near an edge
    less than bw x bh goes (EventDrop's and EventRPG's code shift the box back in at the left and top edges)."""
    w, h, _ = check_sensor_size(sensor_size)
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    inside = (np.abs(events["x"] + 0.5 - cx) < bw / 2) & (np.abs(events["y"] + 0.5 - cy) < bh / 2)   # pixel centres
    return events[~inside]


def cutout(events, sensor_size, area_ratio, aspect, rng):
    """NDA cutout: drop the events in a box of W·a·s x H·a/s (a = ``area_ratio``, s = ``aspect``)."""
    validate(events, sensor_size)
    _check_ratio("area_ratio", area_ratio)
    if aspect <= 0:
        raise ValueError(f"aspect must be > 0, got {aspect!r}")
    w, h, _ = check_sensor_size(sensor_size)
    return _drop_box(events, sensor_size, w * area_ratio * aspect, h * area_ratio / aspect, rng)


def drop_by_area(events, sensor_size, ratio, rng):
    """EventDrop by area: drop the events in a W·r x H·r box (EventDrop's code: area r², not r), centre uniform.

    For spatially uniform events the expected dropped fraction is (r − r²/4)² (the clipping at the edges).
    (EventDrop's public code keeps only the events outside both the box's rows and its columns, a cross; like
    EventRPG's code we drop the box.)
    """
    validate(events, sensor_size)
    _check_ratio("ratio", ratio)
    w, h, _ = check_sensor_size(sensor_size)
    return _drop_box(events, sensor_size, w * ratio, h * ratio, rng)


def drop_random(events, ratio, rng):
    """EventDrop random drop: every event is removed independently with probability ``ratio``."""
    validate(events)
    _check_ratio("ratio", ratio)
    return events[rng.random(events.size) >= ratio]


def drop_by_time(events, ratio, rng):
    """EventDrop by time: remove t0 <= t < t0 + r·D, D = t_last - t_first, t0 uniform in the stream."""
    validate(events)
    _check_ratio("ratio", ratio)
    if events.size == 0:
        return events.copy()
    t = events["t"]
    length = ratio * (t[-1] - t[0])
    t0 = rng.uniform(t[0], t[-1] - length)
    return events[(t < t0) | (t >= t0 + length)]


def _margin_shift(lo, hi, size, m):
    """EventRPG's code: m of the distance from the box centre c = (lo + hi)/2 to the sensor edge on the side of the
    motion, int(m·(size − c)) if m > 0 else int(m·c): events may leave the sensor."""
    c = (lo + hi) / 2
    return int(m * (size - c)) if m > 0 else int(m * c)


def random_eventdrop(events, sensor_size, rng):
    """EventDrop (Gu et al. 2021) as its public code applies it: uniformly one of identity, drop by time
    (r ∈ {0.1, …, 0.9}), drop by area (r ∈ {0.05, …, 0.25}), random drop (r ∈ {0.1, …, 0.9}).  A stream the
    drop would empty is returned unchanged."""
    validate(events, sensor_size)
    op = rng.integers(4)
    if op == 0:
        return events.copy()
    if op == 2:
        out = drop_by_area(events, sensor_size, rng.integers(1, 6) / 20, rng)
    else:
        out = (drop_by_time if op == 1 else drop_random)(events, rng.integers(1, 10) / 10, rng)
    return out if out.size else events.copy()


NDA_OPS = ("identity", "flip_x", "cutout", "rotate", "translate_x", "translate_y",
           "shear_x", "shear_y", "scale")


def random_nda(events, sensor_size, rng, ops=NDA_OPS):
    """Apply one op drawn uniformly from ``ops`` with a magnitude drawn from EventRPG's ranges (§4.4):

    cutout a ~ U(0.1, 0.5), s ~ U(0.5, 1.5); rotate θ ~ U(-60°, 60°) about the box centre; translate m ~ U(-0.3,
    0.3) (:func:`_margin_shift`); shear m ~ U(-0.3, 0.3) times the box's aspect, x' = x + m·(w/h)·(y − c_y) (and y
    likewise), as EventRPG's code; scale f ~ U(0.5, 1.5).  "Box": the events' bounding box.
    """
    op = ops[rng.integers(len(ops))]
    validate(events, sensor_size)
    w, h, _ = check_sensor_size(sensor_size)
    if op == "identity" or events.size == 0:
        return events.copy()
    if op == "flip_x":
        return flip_x(events, sensor_size)
    if op == "cutout":
        return cutout(events, sensor_size, rng.uniform(0.1, 0.5), rng.uniform(0.5, 1.5), rng)
    if op == "rotate":
        return rotate(events, sensor_size, rng.uniform(-60, 60))
    if op in ("translate_x", "translate_y"):
        m, x, y = rng.uniform(-0.3, 0.3), events["x"], events["y"]
        if op == "translate_x":
            return translate(events, sensor_size, _margin_shift(x.min(), x.max(), w, m), 0)
        return translate(events, sensor_size, 0, _margin_shift(y.min(), y.max(), h, m))
    if op in ("shear_x", "shear_y"):
        xr, yr = np.ptp(events["x"]), np.ptp(events["y"])
        if op == "shear_x":
            return shear_x(events, sensor_size, rng.uniform(-0.3, 0.3) * xr / max(yr, 1))
        return shear_y(events, sensor_size, rng.uniform(-0.3, 0.3) * yr / max(xr, 1))
    if op == "scale":
        return scale(events, sensor_size, rng.uniform(0.5, 1.5))
    raise ValueError(f"unknown NDA op {op!r}; choose from {NDA_OPS}")
