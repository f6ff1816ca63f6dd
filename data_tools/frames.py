"""Events -> frames: per-pixel, per-polarity event counts, shape ``(T, P, H, W)`` float32.

Every event lands in exactly one frame, so ``frames.sum() == len(events)``.  The counting is one
``np.bincount`` over the flat index ``((b * P + p) * H + y) * W + x`` (b = frame of the event),
which is many times faster than ``np.add.at``.  With ``P == 1`` both polarities share channel 0.
"""
import numpy as np

from .events import check_sensor_size, validate


def _count(events, bins, n_frames, sensor_size):
    """Histogram ``events`` into ``(n_frames, P, H, W)`` given each event's frame index ``bins``."""
    w, h, p = check_sensor_size(sensor_size)
    if events.size == 0:
        return np.zeros((n_frames, p, h, w), np.float32)
    pol = events["p"].astype(np.intp) if p == 2 else 0
    flat = ((bins.astype(np.intp) * p + pol) * h + events["y"]) * w + events["x"]
    counts = np.bincount(flat, minlength=n_frames * p * h * w)
    return counts.astype(np.float32).reshape(n_frames, p, h, w)


def frame_index(events, n_frames, split_by="number"):
    """Frame index of every event.

    ``"number"``: N events, per = N // T; event i goes to frame min(i // per, T - 1), so the first
    T - 1 frames hold exactly ``per`` events and the last holds ``per + N mod T`` (all of them if N < T).
    ``"time"``: equal durations D = t_last - t_first; event at t goes to floor(T (t - t_first) / D),
    the event at t_last joins the last frame (all events go to frame 0 when D == 0).
    """
    n = events.size
    if split_by == "number":
        per = n // n_frames
        if per == 0:
            return np.full(n, n_frames - 1, np.intp)
        return np.minimum(np.arange(n) // per, n_frames - 1)
    if split_by == "time":
        if n == 0:
            return np.zeros(0, np.intp)
        t = events["t"] - events["t"][0]
        dur = int(t[-1])
        if dur == 0:
            return np.zeros(n, np.intp)
        return np.minimum(t * n_frames // dur, n_frames - 1)
    raise ValueError(f"split_by must be 'number' or 'time', got {split_by!r}")


def to_frames(events, sensor_size, n_frames, split_by="number"):
    """Events -> float32 ``(T, P, H, W)`` counts, split by equal event count or equal duration."""
    if not isinstance(n_frames, (int, np.integer)) or n_frames < 1:
        raise ValueError(f"n_frames must be a positive int, got {n_frames!r}")
    validate(events, sensor_size)
    return _count(events, frame_index(events, n_frames, split_by), int(n_frames), sensor_size)


def to_frames_window(events, sensor_size, window_us):
    """Fixed time windows: frame b holds t_first + b*window <= t < t_first + (b+1)*window.

    T = (t_last - t_first) // window + 1 (an empty stream gives T = 0).
    """
    if window_us <= 0:
        raise ValueError(f"window_us must be > 0, got {window_us!r}")
    validate(events, sensor_size)
    if events.size == 0:
        return _count(events, None, 0, sensor_size)
    bins = (events["t"] - events["t"][0]) // int(window_us)
    return _count(events, bins, int(bins[-1]) + 1, sensor_size)


def downsample(frames, factor):
    """Sum-pool the last two axes by an integer ``factor`` (zero-padded up to a multiple of it).

    out[..., i, j] = sum over a < f, b < f of frames[..., f*i + a, f*j + b]; the total count is kept.
    """
    f = int(factor)
    if f < 1 or f != factor:
        raise ValueError(f"factor must be a positive integer, got {factor!r}")
    h, w = frames.shape[-2:]
    hh, ww = -(-h // f), -(-w // f)
    pad = [(0, 0)] * (frames.ndim - 2) + [(0, hh * f - h), (0, ww * f - w)]
    x = np.pad(frames, pad)
    return x.reshape(frames.shape[:-2] + (hh, f, ww, f)).sum(axis=(-3, -1))


def downsample_events(events, sensor_size, factor):
    """Event-level twin of :func:`downsample`: x // f, y // f on a ceil(W/f) x ceil(H/f) sensor.

    Returns ``(events, new_sensor_size)``; ``to_frames`` of the result equals ``downsample`` of the frames.
    """
    w, h, p = check_sensor_size(sensor_size)
    f = int(factor)
    if f < 1 or f != factor:
        raise ValueError(f"factor must be a positive integer, got {factor!r}")
    out = validate(events, sensor_size).copy()
    out["x"] //= f
    out["y"] //= f
    return out, (-(-w // f), -(-h // f), p)


def pad_crop(frames, size):
    """Centre-pad with zeros or centre-crop the last two axes to ``size = (H, W)``."""
    out = frames
    for axis, target in zip((-2, -1), size):
        n = out.shape[axis]
        if target > n:
            pad = [(0, 0)] * out.ndim
            pad[axis] = ((target - n) // 2, target - n - (target - n) // 2)
            out = np.pad(out, pad)
        elif target < n:
            start = (n - target) // 2
            out = np.take(out, np.arange(start, start + target), axis=axis)
    return out


def partition(frames, t1):
    """HSD's temporal split: ``(frames[:T1], frames[T1:])`` (first T1 steps, the rest)."""
    if not 0 <= t1 <= len(frames):
        raise ValueError(f"T1 must lie in [0, {len(frames)}], got {t1}")
    return frames[:t1], frames[t1:]
