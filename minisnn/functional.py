"""Differentiable ops. Each op computes its forward with NumPy and defines its backward right below.

Every op takes Tensors (or arrays/scalars, promoted with :func:`tensor`) and returns a Tensor. The
backward closure receives ``g = dL/d(out)`` and returns one gradient per parent (``None`` = no
gradient). Broadcasting is undone by :func:`unbroadcast`. All ops preserve float64.
"""
import numpy as np

from .autograd import Tensor, make, tensor, unbroadcast

# ----------------------------------------------------------------------------- elementwise


def _operands(a, b):
    a = tensor(a)
    b = b if isinstance(b, Tensor) else Tensor(np.asarray(b, dtype=a.dtype))
    return a, b


def add(a, b):
    a, b = _operands(a, b)
    return make(a.data + b.data, (a, b), lambda g: (unbroadcast(g, a.shape), unbroadcast(g, b.shape)))


def sub(a, b):
    a, b = _operands(a, b)
    return make(a.data - b.data, (a, b), lambda g: (unbroadcast(g, a.shape), unbroadcast(-g, b.shape)))


def mul(a, b):
    a, b = _operands(a, b)
    return make(a.data * b.data, (a, b),
                lambda g: (unbroadcast(g * b.data, a.shape), unbroadcast(g * a.data, b.shape)))


def div(a, b):
    a, b = _operands(a, b)
    out = a.data / b.data
    return make(out, (a, b), lambda g: (unbroadcast(g / b.data, a.shape), unbroadcast(-g * out / b.data, b.shape)))


def neg(a):
    return make(-a.data, (a,), lambda g: (-g,))


def pow(a, p):
    """a ** p for a constant exponent p."""
    a = tensor(a)
    return make(a.data ** p, (a,), lambda g: (g * p * a.data ** (p - 1),))


def exp(a):
    a = tensor(a)
    out = np.exp(a.data)
    return make(out, (a,), lambda g: (g * out,))


def log(a):
    a = tensor(a)
    return make(np.log(a.data), (a,), lambda g: (g / a.data,))


def sqrt(a):
    a = tensor(a)
    out = np.sqrt(a.data)
    return make(out, (a,), lambda g: (g / (2 * out),))


def abs(a):
    a = tensor(a)
    return make(np.abs(a.data), (a,), lambda g: (g * np.sign(a.data),))


def relu(a):
    a = tensor(a)
    return make(np.maximum(a.data, 0), (a,), lambda g: (g * (a.data > 0),))


def sigmoid(a):
    a = tensor(a)
    out = 0.5 * (1 + np.tanh(0.5 * a.data))  # overflow-free logistic
    return make(out, (a,), lambda g: (g * out * (1 - out),))


def tanh(a):
    a = tensor(a)
    out = np.tanh(a.data)
    return make(out, (a,), lambda g: (g * (1 - out * out),))


def clip(a, lo, hi):
    """Clamp to [lo, hi]; zero gradient outside."""
    a = tensor(a)
    return make(np.clip(a.data, lo, hi), (a,), lambda g: (g * ((a.data >= lo) & (a.data <= hi)),))


def floor_ste(a):
    """⌊a⌋ forward, identity backward (straight-through estimator, used by QCFS)."""
    a = tensor(a)
    return make(np.floor(a.data), (a,), lambda g: (g,))


def spike(x, surrogate):
    """Heaviside step Θ(x) with Θ(0) = 1 forward; the surrogate's g'(x) backward."""
    x = tensor(x)
    return make((x.data >= 0).astype(x.dtype), (x,), lambda g: (g * surrogate.grad(x.data),))


def where(cond, a, b):
    """Elementwise cond ? a : b (cond is a constant boolean array)."""
    cond = np.asarray(cond.data if isinstance(cond, Tensor) else cond, dtype=bool)
    a, b = _operands(a, b)
    return make(np.where(cond, a.data, b.data), (a, b),
                lambda g: (unbroadcast(np.where(cond, g, 0), a.shape), unbroadcast(np.where(cond, 0, g), b.shape)))


# ----------------------------------------------------------------------------- reductions and shapes


def _keep(g, shape, axis, keepdims):
    """Reshape a reduced gradient so that it broadcasts against the input of shape ``shape``."""
    if axis is None or keepdims:
        return g if axis is not None else np.reshape(g, (1,) * len(shape))
    axes = (axis,) if np.isscalar(axis) else axis
    return np.expand_dims(g, tuple(ax % len(shape) for ax in axes))


def sum(a, axis=None, keepdims=False):
    a = tensor(a)
    return make(np.sum(a.data, axis=axis, keepdims=keepdims), (a,),
                lambda g: (np.broadcast_to(_keep(g, a.shape, axis, keepdims), a.shape),))


def mean(a, axis=None, keepdims=False):
    a = tensor(a)
    n = a.size // (np.sum(a.data, axis=axis, keepdims=keepdims).size or 1)
    return make(np.mean(a.data, axis=axis, keepdims=keepdims), (a,),
                lambda g: (np.broadcast_to(_keep(g, a.shape, axis, keepdims) / n, a.shape),))


def max(a, axis=None, keepdims=False):
    """Maximum; the gradient is shared equally among tied maxima."""
    a = tensor(a)
    out = np.max(a.data, axis=axis, keepdims=keepdims)

    def backward(g):
        mask = a.data == _keep(out, a.shape, axis, keepdims)
        mask = mask / np.sum(mask, axis=axis, keepdims=True)
        return (mask * _keep(g, a.shape, axis, keepdims),)
    return make(out, (a,), backward)


def reshape(a, *shape):
    a = tensor(a)
    shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    return make(a.data.reshape(shape), (a,), lambda g: (g.reshape(a.shape),))


def transpose(a, *axes):
    a = tensor(a)
    axes = axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else (axes or None)
    inv = None if axes is None else tuple(np.argsort(axes))
    return make(np.transpose(a.data, axes), (a,), lambda g: (np.transpose(g, inv),))


def getitem(a, idx):
    """Basic or advanced indexing. Basic indices (ints, slices) select each element at most once, so the
    backward is a plain assignment; advanced indices may repeat, so they accumulate with np.add.at."""
    a = tensor(a)
    idx = tuple(i.data if isinstance(i, Tensor) else i for i in idx) if isinstance(idx, tuple) else idx
    basic = all(isinstance(i, (int, np.integer, slice)) or i is None or i is Ellipsis
                for i in (idx if isinstance(idx, tuple) else (idx,)))

    def backward(g):
        ga = np.zeros_like(a.data)
        if basic:
            ga[idx] = g
        else:
            np.add.at(ga, idx, g)
        return (ga,)
    return make(a.data[idx], (a,), backward)


def stack(tensors, axis=0):
    tensors = [tensor(t) for t in tensors]
    return make(np.stack([t.data for t in tensors], axis), tensors,
                lambda g: tuple(np.moveaxis(g, axis, 0)))


def concat(tensors, axis=0):
    tensors = [tensor(t) for t in tensors]
    splits = np.cumsum([t.shape[axis] for t in tensors])[:-1]
    return make(np.concatenate([t.data for t in tensors], axis), tensors, lambda g: tuple(np.split(g, splits, axis)))


# ----------------------------------------------------------------------------- linear algebra


def matmul(a, b):
    """a @ b (batched like np.matmul); 1-D operands are not supported, reshape them first."""
    a, b = tensor(a), tensor(b)
    if a.ndim < 2 or b.ndim < 2:
        raise ValueError("matmul: both operands need at least 2 dimensions")
    return make(a.data @ b.data, (a, b), lambda g: (unbroadcast(g @ np.swapaxes(b.data, -1, -2), a.shape),
                                                    unbroadcast(np.swapaxes(a.data, -1, -2) @ g, b.shape)))


def linear(x, weight, bias=None):
    """y = x Wᵀ + b with W of shape (out, in), for x of shape (..., in)."""
    x = tensor(x)
    x2 = x.data.reshape(-1, x.shape[-1])
    out = (x2 @ weight.data.T).reshape(x.shape[:-1] + (weight.shape[0],))
    parents = (x, weight) + ((bias,) if bias is not None else ())
    if bias is not None:
        out += bias.data

    def backward(g):
        g2 = g.reshape(-1, weight.shape[0])
        grads = ((g2 @ weight.data).reshape(x.shape), g2.T @ x2)
        return grads + ((g2.sum(0),) if bias is not None else ())
    return make(out, parents, backward)


# ----------------------------------------------------------------------------- softmax family


def softmax(a, axis=-1):
    a = tensor(a)
    e = np.exp(a.data - a.data.max(axis=axis, keepdims=True))
    out = e / e.sum(axis=axis, keepdims=True)
    return make(out, (a,), lambda g: (out * (g - (g * out).sum(axis=axis, keepdims=True)),))


def log_softmax(a, axis=-1):
    a = tensor(a)
    z = a.data - a.data.max(axis=axis, keepdims=True)
    out = z - np.log(np.exp(z).sum(axis=axis, keepdims=True))
    return make(out, (a,), lambda g: (g - np.exp(out) * g.sum(axis=axis, keepdims=True),))


# ----------------------------------------------------------------------------- convolution and pooling


def _offsets(kh, kw, stride, Ho, Wo):
    """For every kernel offset (a, b): the strided slice of the input that meets kernel tap (a, b)."""
    for a in range(kh):
        for b in range(kw):
            yield a, b, (slice(None), slice(None), slice(a, a + stride * Ho, stride), slice(b, b + stride * Wo, stride))


def _out_size(n, k, stride, name):
    out = (n - k) // stride + 1
    if out < 1:
        raise ValueError(f"{name}: input size {n} is too small for kernel {k}")
    return out


def _pair(v, name):
    v = (v, v) if np.isscalar(v) else tuple(v)
    if len(v) != 2 or any(int(i) != i or i < 0 for i in v):
        raise ValueError(f"{name} must be a non-negative int or a pair of them, got {v!r}")
    return int(v[0]), int(v[1])


def _conv_geometry(x, kh, kw, stride, ph, pw):
    """Padded input in [C, N, Hp·Wq] layout and the output grid.

    Stride 1 uses "wide rows": the output is computed on Wq = Wp columns (the last kw − 1 are junk and
    dropped), so the input meeting kernel tap (a, b) is ONE contiguous slice at offset a·Wp + b of each
    flattened padded image — im2col and col2im copy long rows instead of short strided ones. One extra
    zero row at the bottom keeps the last slice inside the buffer. Stride > 1: Wq = Wo, strided slices.
    """
    N, C, H, W = x.shape
    Hp, Wp = H + 2 * ph, W + 2 * pw
    Ho, Wo = _out_size(Hp, kh, stride, "conv2d"), _out_size(Wp, kw, stride, "conv2d")
    wide = stride == 1
    xp = np.zeros((C, N, Hp + wide, Wp), x.dtype)
    xp[:, :, ph:ph + H, pw:pw + W] = x.transpose(1, 0, 2, 3)
    return xp, Ho, Wo, (Wp if wide else Wo)


def _tap(xp, a, b, stride, Ho, Wo, Wq):
    """The view of padded input [C, N, Hp(+1), Wp] that meets kernel tap (a, b): [C, N, Ho·Wq] or [C, N, Ho, Wo]."""
    if Wq != Wo:  # wide rows (stride 1)
        flat = xp.reshape(xp.shape[0], xp.shape[1], -1)
        return flat[:, :, a * Wq + b: a * Wq + b + Ho * Wq]
    return xp[:, :, a:a + stride * Ho:stride, b:b + stride * Wo:stride]


def conv2d(x, weight, bias=None, stride=1, padding=0):
    """2-D cross-correlation: out[n,o,i,j] = Σ_{c,a,b} w[o,c,a,b]·x_pad[n,c,s·i+a,s·j+b] + bias[o].

    Forward: im2col — cols[c,a,b,n,i,j] = x_pad[n,c,s·i+a,s·j+b], one slice of the padded input per kernel
    tap (see :func:`_conv_geometry`) — then ONE GEMM  W[O, C·kh·kw] @ cols[C·kh·kw, N·Ho·Wq].
    Backward: dW = g[O, N·Ho·Wq] @ colsᵀ (one GEMM); dx: dcols = Wᵀ @ g (one GEMM), then a loop over the
    kh·kw kernel taps adds each slice of dcols back into the padded input gradient (col2im, no np.add.at).
    """
    x = tensor(x)
    ph, pw = _pair(padding, "padding")
    O, C, kh, kw = weight.shape
    if x.ndim != 4 or x.shape[1] != C:
        raise ValueError(f"conv2d: input must be [N, {C}, H, W], got {x.shape}")
    N, _, H, W = x.shape
    xp, Ho, Wo, Wq = _conv_geometry(x.data, kh, kw, stride, ph, pw)
    cols = np.empty((C, kh, kw, N, Ho * Wq), dtype=x.dtype)
    for a in range(kh):
        for b in range(kw):
            cols[:, a, b] = _tap(xp, a, b, stride, Ho, Wo, Wq).reshape(C, N, -1)
    cols = cols.reshape(C * kh * kw, N * Ho * Wq)
    w2 = weight.data.reshape(O, -1)
    out = (w2 @ cols).reshape(O, N, Ho, Wq)[..., :Wo].transpose(1, 0, 2, 3)   # NCHW view; copied below
    out = out + bias.data.reshape(1, O, 1, 1) if bias is not None else np.ascontiguousarray(out)
    parents = (x, weight) + ((bias,) if bias is not None else ())

    def backward(g):
        g2 = np.zeros((O, N, Ho, Wq), g.dtype)   # the junk columns of the wide grid get zero gradient
        g2[..., :Wo] = g.transpose(1, 0, 2, 3)
        g2 = g2.reshape(O, -1)
        # dW = g2 @ colsᵀ, computed as (cols @ g2ᵀ)ᵀ: the same numbers, but OpenBLAS is up to 30x faster for it
        gw = (cols @ g2.T).T.reshape(weight.shape) if weight.requires_grad else None
        gx = None
        if x.requires_grad:
            dcols = (w2.T @ g2).reshape(C, kh, kw, N, Ho * Wq)
            gxp = np.zeros_like(xp)
            for a in range(kh):
                for b in range(kw):
                    tap = _tap(gxp, a, b, stride, Ho, Wo, Wq)
                    tap += dcols[:, a, b].reshape(tap.shape)
            gx = gxp[:, :, ph:ph + H, pw:pw + W].transpose(1, 0, 2, 3)
        return (gx, gw) + ((g2.sum(1),) if bias is not None else ())
    return make(out, parents, backward)


def _pool(x, kernel_size, stride, kind):
    """Pooling as a loop over the k×k kernel offsets, each a strided slice of the input (no window copies)."""
    x = tensor(x)
    kh, kw = _pair(kernel_size, "kernel_size")
    s = kh if stride is None else int(stride)
    if x.ndim != 4:
        raise ValueError(f"{kind}_pool2d: input must be [N, C, H, W], got {x.shape}")
    Ho, Wo = _out_size(x.shape[2], kh, s, f"{kind}_pool2d"), _out_size(x.shape[3], kw, s, f"{kind}_pool2d")
    out, arg = None, None
    for a, b, sl in _offsets(kh, kw, s, Ho, Wo):
        v = x.data[sl]
        if out is None:
            out, arg = v.copy(), np.zeros(v.shape, np.int8 if kh * kw < 128 else np.int32)
        elif kind == "avg":
            out += v
        else:  # strictly greater: ties go to the first offset
            better = v > out
            np.copyto(out, v, where=better)
            arg[better] = a * kw + b
    if kind == "avg":
        out *= 1.0 / (kh * kw)

    def backward(g):
        gx = np.zeros_like(x.data)
        g_avg = g * (1.0 / (kh * kw)) if kind == "avg" else None
        for a, b, sl in _offsets(kh, kw, s, Ho, Wo):
            contrib = g_avg if kind == "avg" else g * (arg == a * kw + b)
            if s >= kh and s >= kw:  # windows do not overlap: each input meets one window
                gx[sl] = contrib
            else:
                gx[sl] += contrib
        return (gx,)
    return make(out, (x,), backward)


def avg_pool2d(x, kernel_size, stride=None):
    """Mean over k×k windows (stride defaults to k); the backward spreads g/k² over each window."""
    return _pool(x, kernel_size, stride, "avg")


def max_pool2d(x, kernel_size, stride=None):
    """Max over k×k windows; the backward routes g to the (first) arg-max of each window."""
    return _pool(x, kernel_size, stride, "max")


def _adaptive_matrix(n_in, n_out, dtype):
    """P[i, j] = 1/len(bin i) for j in bin i = [⌊i·n_in/n_out⌋, ⌈(i+1)·n_in/n_out⌉) (PyTorch's bins)."""
    P = np.zeros((n_out, n_in), dtype=dtype)
    for i in range(n_out):
        lo, hi = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
        P[i, lo:hi] = 1.0 / (hi - lo)
    return P


def adaptive_avg_pool2d(x, output_size):
    """Average over PyTorch's adaptive bins: out = P_h · x · P_wᵀ, a linear map; backward = P_hᵀ · g · P_w."""
    x = tensor(x)
    oh, ow = _pair(output_size, "output_size")
    Ph, Pw = _adaptive_matrix(x.shape[2], oh, x.dtype), _adaptive_matrix(x.shape[3], ow, x.dtype)
    out = Ph @ x.data @ Pw.T
    return make(out, (x,), lambda g: (Ph.T @ g @ Pw,))


# ----------------------------------------------------------------------------- normalisation and dropout


def _chan_sum(a):
    """Σ over every axis but 1 (channels) of an [N, C, ...] array: a contiguous last-axis sum, then over N."""
    return a.reshape(a.shape[0], a.shape[1], -1).sum(-1).sum(0)


def _chan_dot(a, b):
    """Σ over every axis but 1 of a·b, without materialising the product."""
    return np.einsum("ncl,ncl->c", a.reshape(a.shape[0], a.shape[1], -1), b.reshape(b.shape[0], b.shape[1], -1))


def batch_norm(x, weight, bias, running_mean, running_var, training, momentum=0.1, eps=1e-5):
    """y = γ·(x − μ)/√(σ² + ε) + β per channel (axis 1), statistics over every other axis.

    Training: μ, σ² of the batch (so over T·N·H·W for folded sequences), running stats updated in place
    with the unbiased variance (PyTorch's convention). Eval: running stats, a per-channel affine map.
    Backward (training): dx = γ/√(σ² + ε) · (g − mean(g) − x̂·mean(g·x̂)), means per channel.
    """
    x = tensor(x)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    n = x.size // x.shape[1]
    if training:
        mu = _chan_sum(x.data) / n
        xhat = x.data - mu.reshape(shape)
        var = _chan_dot(xhat, xhat) / n
        running_mean *= 1 - momentum
        running_mean += momentum * mu
        running_var *= 1 - momentum
        running_var += momentum * var * n / (n - 1 if n > 1 else 1)
    else:
        mu, var = running_mean.astype(x.dtype), running_var.astype(x.dtype)
        xhat = x.data - mu.reshape(shape)
    inv = (1.0 / np.sqrt(var + eps)).astype(x.dtype)
    xhat *= inv.reshape(shape)
    out = xhat * weight.data.reshape(shape)
    out += bias.data.reshape(shape)

    def backward(g):
        gb, gw = _chan_sum(g), _chan_dot(g, xhat)
        scale = weight.data * inv
        gx = g * scale.reshape(shape)
        if training:  # gx = scale·g − scale·mean(g) − x̂·scale·mean(g·x̂)
            gx -= xhat * (scale * gw / n).reshape(shape)
            gx -= (scale * gb / n).reshape(shape)
        return gx, gw, gb
    return make(out, (x, weight, bias), backward)


def layer_norm(x, axes, weight=None, bias=None, eps=1e-5):
    """(x − mean)/√(var + ε)·γ + β over ``axes``, composed from differentiable ops."""
    x = tensor(x)
    mu = mean(x, axis=axes, keepdims=True)
    xc = x - mu
    y = xc / sqrt(mean(xc * xc, axis=axes, keepdims=True) + eps)
    if weight is not None:
        y = y * weight
    return y + bias if bias is not None else y


def dropout(x, p, rng, training=True):
    """Zero each element with probability p and scale the rest by 1/(1 − p) (inverted dropout)."""
    x = tensor(x)
    if not training or p == 0:
        return x
    mask = (rng.random(x.shape) >= p).astype(x.dtype) / (1 - p)
    return make(x.data * mask, (x,), lambda g: (g * mask,))


# ----------------------------------------------------------------------------- Tensor methods

Tensor.__add__ = Tensor.__radd__ = add
Tensor.__sub__ = sub
Tensor.__rsub__ = lambda a, b: sub(Tensor(np.asarray(b, dtype=a.dtype)), a)
Tensor.__mul__ = Tensor.__rmul__ = mul
Tensor.__truediv__ = div
Tensor.__rtruediv__ = lambda a, b: div(Tensor(np.asarray(b, dtype=a.dtype)), a)
Tensor.__neg__ = neg
Tensor.__pow__ = pow
Tensor.__matmul__ = matmul
Tensor.__getitem__ = getitem
for _name in ("exp", "log", "sqrt", "abs", "relu", "sigmoid", "tanh", "sum", "mean", "max", "reshape",
              "transpose", "clip", "softmax", "log_softmax"):
    setattr(Tensor, _name, globals()[_name])
