"""Event-camera simulation: the ESIM / v2e DVS pixel model and N-MNIST-style saccades.

DVS pixel model (Gallego et al., "Event-based Vision: A Survey", eq. 1; ESIM, v2e).  Every pixel
watches its log intensity L = log(eps + I) and remembers a reference L_ref (set at the first frame).
Between two samples, L is interpolated linearly in time.  Each time L crosses a level
L_ref + k·C_on (k >= 1) the pixel emits an ON event, each time it crosses L_ref - k·C_off an OFF event,
and L_ref moves to the last level crossed, so afterwards -C_off < L - L_ref < C_on.  The thresholds
carry fixed per-pixel Gaussian mismatch: C_on, C_off ~ N(C, sigma_C²).  An event that follows the
pixel's previous event by less than the refractory period is suppressed (the reference still moves).
Optional background activity: Poisson events of rate ``noise_rate_hz`` per pixel, random polarity.
"""
import numpy as np

from .events import make_events

_EMPTY = np.zeros(0, np.int64)


def _step(l0, l1, t0, t1, ref, c_on, c_off, last, refractory):
    """Events of one sampling step, L going linearly from l0 (time t0) to l1 (time t1).

    The k-th crossing level is ref + k·c (c = C_on, or -C_off for OFF); its time is
    t = t0 + (t1 - t0) · (level - l0) / (l1 - l0).  Updates ``ref`` and ``last`` in place.
    """
    d = l1 - ref
    active = np.flatnonzero((d >= c_on) | (d <= -c_off))
    if active.size == 0:
        return _EMPTY, _EMPTY, _EMPTY
    on = d[active] > 0
    step = np.where(on, c_on[active], -c_off[active])          # signed spacing of the levels
    n = np.floor(d[active] / step).astype(np.int64)             # number of levels crossed
    ref0, a0 = ref[active], l0[active]
    slope = l1[active] - a0
    slope[slope == 0] = 1.0                                     # (cannot cross without change)
    ref[active] = ref0 + n * step
    found = []                                                  # (times, pixels, polarities) per k
    for k in range(1, int(n.max()) + 1):                        # k-th crossing of every active pixel
        sel = np.flatnonzero(n >= k)
        frac = np.clip((ref0[sel] + k * step[sel] - a0[sel]) / slope[sel], 0.0, 1.0)
        t = np.rint(t0 + (t1 - t0) * frac).astype(np.int64)
        idx = active[sel]
        ok = t >= last[idx] + refractory                        # refractory: drop, but ref has moved
        last[idx[ok]] = t[ok]
        found.append((t[ok], idx[ok], on[sel][ok]))
    return tuple(np.concatenate(column) for column in zip(*found))


def dvs_events(video, times_us, rng, C=0.25, sigma_C=0.03, eps=0.3, refractory_us=1000,
               noise_rate_hz=0.0, C_min=0.01):
    """Convert a video ``[S, H, W]`` of intensities in [0, 1] sampled at ``times_us`` into events.

    Returns an event array (sensor ``(W, H, 2)``).  Loops over the S - 1 sampling steps; each step is
    vectorised over pixels.  Thresholds are clipped below at ``C_min``.
    """
    video = np.asarray(video)
    video = video if video.dtype == np.float32 else video.astype(np.float64)   # float32 kept for speed
    times = np.asarray(times_us, dtype=np.int64)
    if video.ndim != 3 or video.shape[0] < 1:
        raise ValueError(f"video must be [S, H, W], got shape {video.shape}")
    if not np.all(np.isfinite(video)) or video.min() < 0:
        raise ValueError("video must hold finite, non-negative intensities")
    if times.shape != video.shape[:1] or np.any(np.diff(times) <= 0):
        raise ValueError(f"times_us must be {video.shape[0]} strictly increasing times")
    s, h, w = video.shape
    logv = np.log(eps + video).reshape(s, h * w)
    c_on = np.maximum(C + sigma_C * rng.standard_normal(h * w), C_min)
    c_off = np.maximum(C + sigma_C * rng.standard_normal(h * w), C_min)
    ref = logv[0].astype(np.float64)                            # L_ref starts at the first frame
    last = np.full(h * w, np.iinfo(np.int64).min // 2)          # time of each pixel's last event: never
    parts = [_step(logv[k - 1], logv[k], times[k - 1], times[k], ref, c_on, c_off, last, refractory_us)
             for k in range(1, s)]
    t, pix, p = (np.concatenate([part[i] for part in parts] + [_EMPTY]) for i in range(3))
    n_noise = rng.poisson(noise_rate_hz * h * w * (times[-1] - times[0]) * 1e-6)
    if n_noise:
        t = np.concatenate([t, rng.integers(times[0], times[-1], n_noise, endpoint=True)])
        pix = np.concatenate([pix, rng.integers(0, h * w, n_noise)])
        p = np.concatenate([p, rng.integers(0, 2, n_noise)])
    return make_events(pix % w, pix // w, t, p)


def dvs_batch(videos, times_us, rng, **kw):
    """Run :func:`dvs_events` on B videos ``[B, S, H, W]`` at once -> list of B event arrays.

    Pixels are independent, so the B videos are laid side by side as one ``[S, H, B·W]`` mosaic,
    simulated in one pass, and the events are split back by x // W.
    """
    b, s, h, w = videos.shape
    ev = dvs_events(videos.transpose(1, 2, 0, 3).reshape(s, h, b * w), times_us, rng, **kw)
    sample = ev["x"] // w
    ev = ev[np.argsort(sample, kind="stable")]                 # stable: each sample stays sorted by t
    ev["x"] %= w
    bounds = np.concatenate([[0], np.cumsum(np.bincount(sample, minlength=b))])
    return [ev[bounds[i]:bounds[i + 1]] for i in range(b)]


def saccade_path(steps_per_leg=30, leg_us=105_000):
    """N-MNIST's saccade: offsets (dx, dy) along (0,0) -> (3.5,7) -> (7,0) -> (0,0), one leg per
    ``leg_us``, sampled ``steps_per_leg`` times per leg.  Returns ``(dx, dy, times_us)``."""
    corners = np.array([(0, 0), (3.5, 7), (7, 0), (0, 0)], dtype=np.float64)
    f = np.arange(steps_per_leg)[:, None] / steps_per_leg
    pts = np.concatenate([a + f * (b - a) for a, b in zip(corners[:-1], corners[1:])] + [corners[-1:]])
    times = np.rint(np.arange(len(pts)) * leg_us / steps_per_leg).astype(np.int64)
    return pts[:, 0], pts[:, 1], times


def shift_video(images, dx, dy, margin=6):
    """Images ``[B, h, w]`` moved by sub-pixel offsets (dx[s], dy[s]) on a canvas ``margin`` px larger.

    Bilinear shift: out[Y, X] = Σ_ab w_a w_b img[Y - dy, X - dx] with weights (1 - f, f) of the
    fractional parts; zero outside the image.  Returns float32 ``[B, S, h + margin, w + margin]``.
    """
    b, h, w = images.shape
    H, W, pad = h + margin, w + margin, int(np.ceil(max(np.abs(dx).max(), np.abs(dy).max()))) + 1
    big = np.zeros((b, H + 2 * pad, W + 2 * pad), np.float32)
    big[:, pad:pad + h, pad:pad + w] = images
    out = np.empty((b, len(dx), H, W), np.float32)
    for s, (ox, oy) in enumerate(zip(dx, dy)):
        ix, iy = int(np.floor(ox)), int(np.floor(oy))
        fx, fy = float(ox - ix), float(oy - iy)    # python floats keep float32
        win = lambda a, c: big[:, pad - iy - a:pad - iy - a + H, pad - ix - c:pad - ix - c + W]
        out[:, s] = ((1 - fy) * ((1 - fx) * win(0, 0) + fx * win(0, 1))
                     + fy * ((1 - fx) * win(1, 0) + fx * win(1, 1)))
    return out


def saccade_batch(images, rng, steps_per_leg=30, leg_us=105_000, margin=6, chunk=32, **dvs_kw):
    """Saccade-convert images ``[B, h, w]`` (intensities in [0, 1]) -> (list of events, sensor_size)."""
    images = np.asarray(images, dtype=np.float64)
    if images.ndim != 3:
        raise ValueError(f"images must be [B, h, w], got shape {images.shape}")
    dx, dy, times = saccade_path(steps_per_leg, leg_us)
    out = []
    for i in range(0, len(images), chunk):
        out += dvs_batch(shift_video(images[i:i + chunk], dx, dy, margin), times, rng, **dvs_kw)
    return out, (images.shape[2] + margin, images.shape[1] + margin, 2)


def saccade_events(image, rng, **kw):
    """One image ``[h, w]`` -> ``(events, sensor_size)``, as N-MNIST was recorded (see saccade_batch)."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"image must be [h, w], got shape {image.shape}")
    events, size = saccade_batch(image[None], rng, **kw)
    return events[0], size
