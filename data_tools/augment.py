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
    """Drop the events inside a bw x bh box placed uniformly at random inside the sensor."""
    w, h, _ = check_sensor_size(sensor_size)
    bw, bh = min(bw, w), min(bh, h)
    x0, y0 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
    x, y = events["x"] + 0.5, events["y"] + 0.5          # pixel centres
    inside = (x >= x0) & (x < x0 + bw) & (y >= y0) & (y < y0 + bh)
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
    """EventDrop by area: drop the events in a random box covering ``ratio`` of the sensor area.

    The box is W·√r x H·√r, so for spatially uniform events the expected dropped fraction is r.
    """
    validate(events, sensor_size)
    _check_ratio("ratio", ratio)
    w, h, _ = check_sensor_size(sensor_size)
    return _drop_box(events, sensor_size, w * np.sqrt(ratio), h * np.sqrt(ratio), rng)


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
    """m of the free margin on the side of the motion: m·(size-1-hi) if m > 0 else m·lo."""
    return m * (size - 1 - hi) if m > 0 else m * lo


NDA_OPS = ("identity", "flip_x", "cutout", "rotate", "translate_x", "translate_y",
           "shear_x", "shear_y", "scale")


def random_nda(events, sensor_size, rng, ops=NDA_OPS):
    """Apply one op drawn uniformly from ``ops`` with a magnitude drawn from EventRPG's ranges (§4.4):

    cutout a ~ U(0.1, 0.5), s ~ U(0.5, 1.5); rotate θ ~ U(-60°, 60°) about the box centre;
    translate m ~ U(-0.3, 0.3) of the free margin; shear m ~ U(-0.3, 0.3); scale f ~ U(0.5, 1.5).
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
        shear = shear_x if op == "shear_x" else shear_y
        return shear(events, sensor_size, rng.uniform(-0.3, 0.3))
    if op == "scale":
        return scale(events, sensor_size, rng.uniform(0.5, 1.5))
    raise ValueError(f"unknown NDA op {op!r}; choose from {NDA_OPS}")
