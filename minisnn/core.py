"""The bridge to the compiled C core, the NumPy reference of every kernel (the readable truth), and the
threads that both the C kernels and the image ops run on.

Kernels work on flat, C-contiguous ``[T, M]`` arrays (T steps, M neurons). Each public function
validates its arguments, then calls C (``backend() == "c"``) or its NumPy twin. Set
``MINISNN_BACKEND=numpy`` to force the reference path; tests assert that both give the same numbers.
"""
import concurrent.futures
import os
import warnings

import numpy as np


SURROGATES = {"sigmoid": 0, "atan": 1, "rectangle": 2, "triangle": 3}

def _env(name, default, allowed=None):
    """An environment setting: an int >= 1 (``allowed=None``) or one of ``allowed``; anything else is a ValueError."""
    value = os.environ.get(name, default)
    if allowed is not None:
        if value not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        return value
    if not str(value).isdigit() or int(value) < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


_env("MINISNN_BACKEND", "c", ("c", "numpy"))
try:
    from . import _core
    _lib, _ffi, _WHY = _core.lib, _core.ffi, None
except ImportError as exc:  # no compiler at install time, or a source checkout not built yet
    _lib = _ffi = None
    built = any(f.startswith("_core.") for f in os.listdir(os.path.dirname(__file__)))
    _WHY = f"the C core could not be loaded ({exc})" if built else "the C core (minisnn._core) was not built"
    if os.environ.get("MINISNN_BACKEND", "c") != "numpy":
        warnings.warn(f"minisnn: {_WHY}, so the NumPy reference kernels are used (same numbers, slower). To build it, "
                      "install a C compiler and run: pip install -e .  (or python cext/build_core.py in a checkout)",
                      RuntimeWarning, stacklevel=2)


CHUNK_BYTES = 1 << 21   # a chunk's temporaries stay in L2/L3 (measured: 1–4 MB alike); tests shrink it to 1
_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1   # usable ones
NUM_THREADS = _env("MINISNN_NUM_THREADS", _CORES)
_POOL = {}   # process id -> thread pool (a forked child starts its own)


def chunked(fn, n, item_bytes=None):
    """Run ``fn(i0, i1)`` over consecutive chunks of ``range(n)`` on NUM_THREADS threads; results in chunk order.

    With ``item_bytes``, chunks hold about CHUNK_BYTES, so that the image ops (conv, batch norm, pools) keep
    a chunk's temporaries in cache; without, one chunk per thread (the C kernels, which block for the cache
    themselves). NumPy, BLAS and cffi release the GIL, so the threads run in parallel (BLAS itself runs on
    one thread, see :func:`_one_blas_thread`). ``fn`` must write only its own slice; sums over the results
    do not depend on the thread count.
    """
    step = CHUNK_BYTES // (item_bytes or 1) if item_bytes is not None else -(-n // NUM_THREADS)
    step = max(1, min(step, n))
    ranges = [(i, min(i + step, n)) for i in range(0, n, step)]
    k = min(NUM_THREADS, len(ranges))
    if k == 1:
        return [fn(*r) for r in ranges]
    pool = _POOL.get(os.getpid()) or _POOL.setdefault(os.getpid(), concurrent.futures.ThreadPoolExecutor(NUM_THREADS - 1))
    share = lambda j: [fn(*r) for r in ranges[j::k]]   # noqa: E731  thread j takes chunks j, j + k, ...
    futures = [pool.submit(share, j) for j in range(1, k)]
    parts = [share(0)] + [f.result() for f in futures]   # this thread works too
    return [parts[i % k][i // k] for i in range(len(ranges))]


def _one_blas_thread():
    """minisnn splits the work over its own threads, so BLAS runs on one (process-wide, at import): BLAS
    threads inside ours oversubscribe the cores, and idle OpenBLAS workers spin, taking the cores from the
    next op (measured on 2 cores: a ConvSNN step 1.5–1.9x slower with 2 BLAS threads).
    ``MINISNN_BLAS_THREADS=n`` chooses another count."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # a dependency; missing only in a bare source checkout
        return
    threadpool_limits(_env("MINISNN_BLAS_THREADS", 1), user_api="blas")


_one_blas_thread()   # always, so that the thread count never changes the numbers (BLAS sums in its own order)


def _over_neurons(fn, T, M):
    """``fn(m0, m1)`` on one range of neurons per thread, or one call when the work is too small to share."""
    return chunked(fn, M) if T * M >= 1 << 18 else fn(0, M)


def backend():
    """'c' when the compiled core is loaded and not disabled by MINISNN_BACKEND=numpy, else 'numpy'."""
    return "c" if _lib is not None and _env("MINISNN_BACKEND", "c", ("c", "numpy")) == "c" else "numpy"


# ----------------------------------------------------------------------------- validation


def _check_block(name, a, dtype, shape):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype != dtype:
        raise ValueError(f"{name} must have dtype {dtype}, got {a.dtype}")
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    return a


def _check_params(decay, gain, v0, dtype, M):
    """decay, gain, v0 as scalars or M per-neuron values -> (three contiguous 1-D arrays, vec flag).

    If any of them is per-neuron, all three are expanded to M values (the kernels then read arrays).
    """
    arrs = []
    for name, v in (("decay", decay), ("gain", gain), ("v0", v0)):
        a = np.asarray(v, dtype=dtype).reshape(-1)
        if a.size not in (1, M):
            raise ValueError(f"{name} must be a scalar or hold one value per neuron ({M}), got {a.size} values")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} must be finite")
        arrs.append(a)
    vec = M > 1 and any(a.size == M for a in arrs)
    arrs = [np.ascontiguousarray(np.broadcast_to(a, (M,)) if vec else a) for a in arrs]
    return arrs, int(vec)


def _check_x(x, name="x"):
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(x).__name__}")
    if x.dtype not in (np.float32, np.float64):
        raise ValueError(f"{name} must be float32 or float64, got {x.dtype}")
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"{name} must be a [T, M] block with T >= 1, got shape {x.shape}")
    if not x.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    return x


def _ptr(a):
    return _ffi.NULL if a is None else _ffi.from_buffer(f"{'float' if a.dtype == np.float32 else 'double'}[]", a)


# ----------------------------------------------------------------------------- LIF forward


def lif_forward(x, decay, gain, v0=0.0, v_th=1.0, v_reset=0.0, v_rest=0.0, return_h=False, keep_u=True):
    """Run the neuron model over T for M neurons. ``v_reset=None`` selects the soft reset.

    u[t] = c·h[t−1] + d·x[t] + (1 − c)·v_rest,  h[0] = v0;  s[t] = Θ(u[t] − v_th), Θ(0) = 1;
    hard: h[t] = u[t](1 − s[t]) + v_reset·s[t];  soft: h[t] = u[t] − v_th·s[t].
    Returns (s, u) or (s, u, h), each [T, M] like x; ``keep_u=False`` returns u = None and saves writing it
    (inference needs only the spikes).
    """
    x = _check_x(x)
    T, M = x.shape
    (c, d, h0), vec = _check_params(decay, gain, v0, x.dtype, M)
    hard = v_reset is not None
    vr = 0.0 if v_reset is None else float(v_reset)
    s, u = np.empty_like(x), np.empty_like(x) if keep_u else None
    h_all = np.empty_like(x) if return_h else None
    if backend() == "c":
        fn = _lib.lif_forward_float if x.dtype == np.float32 else _lib.lif_forward_double
        args = [_ptr(a) for a in (x, s, u, h_all, c, d, h0)]
        _over_neurons(lambda m0, m1: fn(*args, vec, T, M, m0, m1, v_th, vr, int(hard), v_rest), T, M)
    else:
        _lif_forward_numpy(x, s, u, h_all, c, d, h0, x.dtype.type(v_th), x.dtype.type(vr), hard, x.dtype.type(v_rest))
    return (s, u, h_all) if return_h else (s, u)


def _lif_forward_numpy(x, s, u, h_all, c, d, h0, v_th, v_reset, hard, v_rest):
    h = np.broadcast_to(h0, x.shape[1:]).copy()
    for t in range(x.shape[0]):
        ut = c * h + d * x[t] + (1 - c) * v_rest
        s[t] = ut >= v_th
        h = ut * (1 - s[t]) + v_reset * s[t] if hard else ut - v_th * s[t]
        if u is not None:
            u[t] = ut
        if h_all is not None:
            h_all[t] = h


# ----------------------------------------------------------------------------- LIF backward (BPTT)


def lif_backward(gs, gu, x, u, decay, gain, v0=0.0, v_th=1.0, v_reset=0.0, v_rest=0.0,
                 detach_reset=False, surrogate="sigmoid", sg_param=4.0, param_grads=True):
    """Back-propagate through :func:`lif_forward`. ``gs``/``gu`` = dL/ds, dL/du (None = zero).

    Returns (dL/dx [T, M], dL/d(decay) [M], dL/d(gain) [M], dL/dv0 [M]); the per-neuron
    parameter gradients are summed over time (the caller sums them further to its parameter shape).
    ``param_grads=False`` skips dL/d(decay) and dL/d(gain) (returned as zeros): faster.
    The spikes are not an argument: s[t] = (u[t] >= v_th) is recomputed, exactly as the forward fired.
    """
    x = _check_x(x)
    T, M = x.shape
    _check_block("u", u, x.dtype, x.shape)   # required (a forward with keep_u=False cannot be back-propagated)
    for name, a in (("gs", gs), ("gu", gu)):
        if a is not None:
            _check_block(name, a, x.dtype, x.shape)
    if surrogate not in SURROGATES:
        raise ValueError(f"surrogate must be one of {sorted(SURROGATES)}, got {surrogate!r}")
    (c, d, h0), vec = _check_params(decay, gain, v0, x.dtype, M)
    hard, vr = v_reset is not None, 0.0 if v_reset is None else float(v_reset)
    gx, gc, gd, gv = np.empty_like(x), np.empty(M, x.dtype), np.empty(M, x.dtype), np.empty(M, x.dtype)
    if backend() == "c":
        fn = _lib.lif_backward_float if x.dtype == np.float32 else _lib.lif_backward_double
        args = [_ptr(a) for a in (gs, gu, x, u, gx, gc, gd, gv, c, d, h0)]
        _over_neurons(lambda m0, m1: fn(*args, vec, T, M, m0, m1, v_th, vr, int(hard), v_rest, int(detach_reset),
                                  SURROGATES[surrogate], sg_param, int(param_grads)), T, M)
    else:
        f = x.dtype.type
        _lif_backward_numpy(gs, gu, x, u, gx, gc, gd, gv, c, d, h0, f(v_th), f(vr), hard, f(v_rest),
                            detach_reset, surrogate, f(sg_param), param_grads)
    return gx, gc, gd, gv


def surrogate_grad(x, kind, a):
    """g'(x) of the named surrogate (the same formulas as the C switch and neurons.py's classes)."""
    if kind == "sigmoid":
        sg = 1 / (1 + np.exp(-a * x))
        return a * sg * (1 - sg)
    if kind == "atan":
        return (a / 2) / (1 + (np.pi / 2 * a * x) ** 2)
    if kind == "rectangle":
        return (np.abs(x) < a / 2) / a
    return np.maximum(a - np.abs(x), 0) / (a * a)


def _lif_backward_numpy(gs, gu, x, u, gx, gc, gd, gv, c, d, h0, v_th, v_reset, hard, v_rest, detach, kind, a, params):
    keep = 0 if detach else 1
    s = (u >= v_th).astype(x.dtype)
    gh = np.zeros(x.shape[1], x.dtype)
    gc[:] = 0
    gd[:] = 0
    for t in range(x.shape[0] - 1, -1, -1):
        sg = surrogate_grad(u[t] - v_th, kind, a).astype(x.dtype)
        g_s = gs[t] if gs is not None else 0
        g_u = gu[t] if gu is not None else 0
        if hard:
            du = g_u + (g_s + gh * (v_reset - u[t]) * keep) * sg + gh * (1 - s[t])
        else:
            du = g_u + (g_s - gh * v_th * keep) * sg + gh
        gx[t] = d * du
        gh = c * du
        if not params:   # as the C kernel: dL/d(decay) and dL/d(gain) stay 0
            continue
        hprev = (np.broadcast_to(h0, gh.shape) if t == 0 else   # h[t−1], h[0] = v0
                 u[t - 1] * (1 - s[t - 1]) + v_reset * s[t - 1] if hard else u[t - 1] - v_th * s[t - 1])
        gc += du * (hprev - v_rest)
        gd += du * x[t]
    gv[:] = gh


# ----------------------------------------------------------------------------- SLTRP recursion


def sltrp(r_out, gamma):
    """EventRPG eq. 10–11 on [T, M] blocks -> (R_in [T, M], R_init [M]); see relevance.sltrp_recursion."""
    r_out = _check_x(r_out, "r_out")
    _check_block("gamma", gamma, r_out.dtype, r_out.shape)
    T, M = r_out.shape
    r_in, r_init = np.empty_like(r_out), np.empty(M, r_out.dtype)
    if backend() == "c":
        fn = _lib.sltrp_float if r_out.dtype == np.float32 else _lib.sltrp_double
        args = [_ptr(a) for a in (r_out, gamma, r_in, r_init)]
        _over_neurons(lambda m0, m1: fn(*args, T, M, m0, m1), T, M)
        return r_in, r_init
    r_in[-1] = r_out[-1]
    for t in range(T - 1, 0, -1):
        carry = gamma[t] * r_in[t]
        r_in[t - 1] = carry + r_out[t - 1]
        r_in[t] -= carry
    r_init[:] = gamma[0] * r_in[0]
    r_in[0] -= r_init
    return r_in, r_init
