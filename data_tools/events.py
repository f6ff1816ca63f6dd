"""Event streams as NumPy structured arrays (the tonic convention).

An event stream is a 1-D structured array with fields ``x, y`` (uint16, pixel column/row),
``t`` (int64, microseconds) and ``p`` (uint8, 1 = ON, 0 = OFF), sorted by ``t``.
``sensor_size = (W, H, P)``.
"""
import numpy as np

EVENT_DTYPE = np.dtype([("x", "<u2"), ("y", "<u2"), ("t", "<i8"), ("p", "u1")])


def make_events(x, y, t, p, sort=True):
    """Build an event array from four equally long 1-D sequences (sorted by t unless ``sort=False``)."""
    cols = {"x": np.asarray(x), "y": np.asarray(y), "t": np.asarray(t), "p": np.asarray(p)}
    n = cols["x"].shape
    for name, c in cols.items():
        if c.ndim != 1 or c.shape != n:
            raise ValueError(f"make_events: '{name}' must be 1-D with the same length as 'x' ({n}), got {c.shape}")
        if c.size and not (np.issubdtype(c.dtype, np.integer) or np.issubdtype(c.dtype, np.bool_)):
            if not np.all(np.isfinite(c)) or np.any(c != np.round(c)):
                raise ValueError(f"make_events: '{name}' must hold integers")
    for name, hi in (("x", 65535), ("y", 65535), ("p", 1)):
        c = cols[name]
        if c.size and (c.min() < 0 or c.max() > hi):
            raise ValueError(f"make_events: '{name}' must lie in [0, {hi}]")
    ev = np.empty(n[0], dtype=EVENT_DTYPE)
    for name, c in cols.items():
        ev[name] = c
    if sort:
        ev = ev[np.argsort(ev["t"], kind="stable")]
    return ev


def check_sensor_size(sensor_size):
    """Validate ``sensor_size = (W, H, P)`` and return it as a tuple of ints."""
    try:
        w, h, p = (int(v) for v in sensor_size)
    except (TypeError, ValueError):
        raise TypeError(f"sensor_size must be a (W, H, P) triple of ints, got {sensor_size!r}") from None
    if not (0 < w <= 65536 and 0 < h <= 65536) or p not in (1, 2):   # x, y are uint16
        raise ValueError(f"sensor_size must have 0 < W, H <= 65536 and P in (1, 2), got {sensor_size!r}")
    return w, h, p


def validate(events, sensor_size=None, name="events"):
    """Check dtype, sort order and (optionally) bounds; return ``events`` unchanged or raise ValueError."""
    if not isinstance(events, np.ndarray) or events.dtype.names is None:
        raise TypeError(f"{name} must be a structured array with fields x, y, t, p")
    missing = [f for f in ("x", "y", "t", "p") if f not in events.dtype.names]
    if missing:
        raise ValueError(f"{name} lacks field(s) {missing}")
    if events.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {events.shape}")
    if events.size and np.any(np.diff(events["t"]) < 0):
        raise ValueError(f"{name}: timestamps 't' are not sorted")
    if sensor_size is not None and events.size:
        w, h, p = check_sensor_size(sensor_size)
        for f, hi in (("x", w), ("y", h), ("p", max(p, 2))):
            if events[f].max() >= hi:
                raise ValueError(f"{name}: field '{f}' has value {events[f].max()} outside sensor_size {sensor_size}")
    return events


def slice_time(events, start, end):
    """Events with ``start <= t < end`` (binary search: events must be sorted)."""
    i, j = np.searchsorted(events["t"], [start, end], side="left")
    return events[i:j]
