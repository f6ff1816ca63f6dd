"""Differentiable ops. Each op computes its forward with NumPy and defines its backward right below.

Every op takes Tensors (or arrays/scalars, promoted with :func:`tensor`) and returns one built by :func:`make`, whose
backward gives ``None`` to a parent without gradient; all preserve float64. :func:`unbroadcast` undoes broadcasting."""
import numpy as np

from .autograd import Tensor, make, tensor, unbroadcast
from .core import chunked

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
    return make(np.stack([t.data for t in tensors], axis), tensors, lambda g: tuple(np.moveaxis(g, axis, 0)))


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
    if bias is not None:
        out += bias.data

    def backward(g):
        g2 = g.reshape(-1, weight.shape[0])
        grads = ((g2 @ weight.data).reshape(x.shape), g2.T @ x2)
        return grads + ((g2.sum(0),) if bias is not None else ())
    return make(out, (x, weight) + ((bias,) if bias is not None else ()), backward)


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


def _offsets(kh, kw, sh, sw, Ho, Wo):
    """For every kernel offset (a, b): the strided slice of the input that meets kernel tap (a, b)."""
    for a, b in np.ndindex(kh, kw):
        yield a, b, (slice(None), slice(None), slice(a, a + sh * Ho, sh), slice(b, b + sw * Wo, sw))


def _out_size(n, k, stride, name):
    out = (n - k) // stride + 1 if stride >= 1 else 0
    if out < 1:
        raise ValueError(f"{name}: input size {n} is too small for kernel {k}, or stride {stride} is not >= 1")
    return out


def _pair(v, name):
    v = (v, v) if np.isscalar(v) else tuple(v)
    if len(v) != 2 or any(int(i) != i or i < 0 for i in v):
        raise ValueError(f"{name} must be a non-negative int or a pair of them, got {v!r}")
    return int(v[0]), int(v[1])


class _ConvGeometry:
    """Output grid, padding, kernel taps and im2col of a conv2d, for one chunk of images at a time (see :func:`chunked`).

    Stride 1 with C ≥ 8 channels uses "wide rows": the output is computed on Wq = Wp columns (the last kw − 1 are
    junk, dropped), so the input meeting kernel tap (a, b) is ONE contiguous slice at offset a·Wp + b of each
    flattened padded image (one extra zero row at the bottom keeps the last slice inside the buffer), a matrix BLAS
    takes as is. Otherwise Wq = Wo and taps are strided slices (faster for few channels: no junk columns).
    """

    def __init__(self, shape, kh, kw, stride, ph, pw):
        _, self.C, self.H, self.W = shape
        self.Hp, self.Wp = self.H + 2 * ph, self.W + 2 * pw
        self.Ho, self.Wo = _out_size(self.Hp, kh, stride, "conv2d"), _out_size(self.Wp, kw, stride, "conv2d")
        self.wide = stride == 1 and self.C >= 8
        self.Wq = self.Wp if self.wide else self.Wo
        self.K, self.L = self.C * kh * kw, self.Ho * self.Wq
        self.kh, self.kw, self.s, self.ph, self.pw = kh, kw, stride, ph, pw

    def tap(self, xp, a, b):
        """The view of padded images [m, C, Hp(+1), Wp] that meets kernel tap (a, b): [m, C, Ho, Wq]."""
        m, C = xp.shape[:2]
        if self.wide:
            return xp.reshape(m, C, -1)[:, :, a * self.Wq + b: a * self.Wq + b + self.L].reshape(m, C, self.Ho, self.Wq)
        return xp[:, :, a:a + self.s * self.Ho:self.s, b:b + self.s * self.Wo:self.s]

    def padded(self, m, dtype):
        return np.zeros((m, self.C, self.Hp + self.wide, self.Wp), dtype)

    def inner(self, xp):
        return xp[:, :, self.ph:self.ph + self.H, self.pw:self.pw + self.W]

    def pad(self, x):
        xp = self.padded(len(x), x.dtype)
        self.inner(xp)[...] = x
        return xp

    def im2col(self, xp):
        """cols [m, C·kh·kw, Ho·Wq] of padded images xp: cols[i, (c, a, b)] = tap (a, b) of channel c."""
        cols = np.empty((len(xp), self.C, self.kh, self.kw, self.Ho, self.Wq), xp.dtype)
        for a, b in np.ndindex(self.kh, self.kw):
            cols[:, :, a, b] = self.tap(xp, a, b)
        return cols.reshape(len(xp), self.K, self.L)

    def forward(self, x, w2, out):
        """out [m, O, Ho, Wo] = W ⋆ x for one chunk of images x [m, C, H, W], w2 = W as [O, C·kh·kw]: im2col + GEMM."""
        cols = self.im2col(self.pad(x))
        if self.wide:   # drop the junk columns
            out[...] = (w2 @ cols).reshape(len(x), -1, self.Ho, self.Wq)[..., :self.Wo]
        else:
            np.matmul(w2, cols, out=out.reshape(len(x), -1, self.L))
        return out

    def widen(self, g):
        """g [m, O, Ho, Wo] as contiguous [m, O, Ho·Wq] (wide rows: the junk columns get a zero gradient)."""
        if self.wide:
            g2 = np.zeros(g.shape[:2] + (self.Ho, self.Wq), g.dtype)
            g2[..., :self.Wo] = g
        else:
            g2 = np.ascontiguousarray(g)
        return g2.reshape(len(g), g.shape[1], self.L)

    def input_grad(self, g2, wt):
        """dx [m, C, H, W] from g2 = widen(g) and wt = W as [kh, kw, C, O]: each tap adds W[:, :, a, b]ᵀ @ g into its view."""
        gxp = self.padded(len(g2), g2.dtype)
        for a, b in np.ndindex(self.kh, self.kw):
            tap = self.tap(gxp, a, b)
            tap += (wt[a, b] @ g2).reshape(tap.shape)
        return self.inner(gxp)


def conv2d(x, weight, bias=None, stride=1, padding=0):
    """2-D cross-correlation: out[n,o,i,j] = Σ_{c,a,b} w[o,c,a,b]·x_pad[n,c,s·i+a,s·j+b] + bias[o].

    Forward, per cache-sized chunk of images (:func:`chunked`): im2col cols[n, (c,a,b), (i,j)] = x_pad[n, c,
    s·i+a, s·j+b], then one batched GEMM  W[O, C·kh·kw] @ cols[m, C·kh·kw, Ho·Wq] → [m, O, Ho·Wq], already NCHW.
    Backward, per chunk, without stored columns (88 MB for ConvSNN): each kernel tap adds W[:, :, a, b]ᵀ @ g into its
    view of dx_pad (1.07–1.13x faster than col2im(Wᵀ @ g) at 16 → 32 channels); dW = Σ_n g[n] @ cols[n]ᵀ on recomputed
    columns, or with wide rows one GEMM per tap, dW[:, :, a, b] = Σ_n g[n] @ tap_ab(x_pad[n])ᵀ (30 % faster at C = 16).
    Textbook twin: conv2d_textbook.
    """
    x = tensor(x)
    ph, pw = _pair(padding, "padding")
    O, C, kh, kw = weight.shape
    if x.ndim != 4 or x.shape[1] != C:
        raise ValueError(f"conv2d: input must be [N, {C}, H, W], got {x.shape}")
    geo, N = _ConvGeometry(x.shape, kh, kw, stride, ph, pw), x.shape[0]
    w2, item = weight.data.reshape(O, -1), geo.K * geo.L * x.data.itemsize   # item: one image's columns
    out = np.empty((N, O, geo.Ho, geo.Wo), x.dtype)
    bias_rows = None if bias is None else _rows(bias.data, out.reshape(N, O, -1))

    def forward(n0, n1):
        geo.forward(x.data[n0:n1], w2, out[n0:n1])
        if bias_rows is not None:   # bias as rows [O, Ho·Wo]: ~2.5x faster than broadcasting bias[:, None, None]
            o = out[n0:n1].reshape(n1 - n0, O, -1)
            o += bias_rows
    chunked(forward, N, item)

    def backward(g):
        gx = np.empty_like(x.data) if x.requires_grad else None
        wt = weight.data.transpose(2, 3, 1, 0).copy()   # [kh, kw, C, O]: tap (a, b)'s W[:, :, a, b]ᵀ

        def chunk(n0, n1):
            g2 = geo.widen(g[n0:n1])
            if x.requires_grad:
                gx[n0:n1] = geo.input_grad(g2, wt)
            if weight.requires_grad:
                xp = geo.pad(x.data[n0:n1])
                if not geo.wide:
                    return (g2 @ geo.im2col(xp).transpose(0, 2, 1)).sum(0)
                return np.stack([(g2 @ geo.tap(xp, a, b).reshape(n1 - n0, C, geo.L).transpose(0, 2, 1)).sum(0)
                                 for a in range(kh) for b in range(kw)], axis=-1)
        gw = chunked(chunk, N, item)
        gw = np.sum(gw, axis=0).reshape(weight.shape) if weight.requires_grad else None
        return (gx, gw) + ((_chan_sum(g),) if bias is not None else ())
    return make(out, (x, weight) + ((bias,) if bias is not None else ()), backward)


def conv2d_textbook(x, weight, bias=None, stride=1, padding=0):
    """The textbook twin of :func:`conv2d`, tested equal to it: im2col, one GEMM, and col2im in the backward.

    cols[n, (c,a,b), (i,j)] = x_pad[n, c, s·i+a, s·j+b];  out[n] = W[O, C·kh·kw] @ cols[n] + bias;  dW = Σ_n g[n] @
    cols[n]ᵀ;  dx = col2im(Wᵀ @ g): each column entry is added back to the input pixel it was copied from.
    """
    x, (ph, pw), (O, C, kh, kw) = tensor(x), _pair(padding, "padding"), weight.shape
    xp = np.pad(x.data, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    Ho, Wo = _out_size(xp.shape[2], kh, stride, "conv2d"), _out_size(xp.shape[3], kw, stride, "conv2d")
    taps, w2 = [sl for _, _, sl in _offsets(kh, kw, stride, stride, Ho, Wo)], weight.data.reshape(O, -1)
    cols = np.stack([xp[sl] for sl in taps], axis=2).reshape(len(xp), C * kh * kw, Ho * Wo)   # im2col

    def backward(g):
        g2, dxp = g.reshape(len(xp), O, -1), np.zeros_like(xp)
        for sl, d in zip(taps, np.moveaxis((w2.T @ g2).reshape(len(xp), C, kh * kw, Ho, Wo), 2, 0)):
            dxp[sl] += d   # col2im
        grads = dxp[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]], (g2 @ cols.transpose(0, 2, 1)).sum(0).reshape(weight.shape)
        return grads + ((g.sum((0, 2, 3)),) if bias is not None else ())
    out = (w2 @ cols).reshape(len(xp), O, Ho, Wo) + (0 if bias is None else bias.data[:, None, None])
    return make(out, (x, weight) + ((bias,) if bias is not None else ()), backward)


def _add_all(views, out):
    """out = Σ views, one pass per view (np.add.reduce on a list would first copy them all into one array)."""
    np.add(views[0], views[1], out=out) if len(views) > 1 else np.copyto(out, views[0])
    for v in views[2:]:
        out += v
    return out


def _pool_args(x, kernel_size, stride, kind):
    x = tensor(x)
    kh, kw = _pair(kernel_size, "kernel_size")
    sh, sw = (kh, kw) if stride is None else _pair(stride, "stride")   # default: the kernel size (as PyTorch)
    if x.ndim != 4:
        raise ValueError(f"{kind}_pool2d: input must be [N, C, H, W], got {x.shape}")
    Ho, Wo = _out_size(x.shape[2], kh, sh, f"{kind}_pool2d"), _out_size(x.shape[3], kw, sw, f"{kind}_pool2d")
    return x, kh, kw, sh, sw, Ho, Wo


def _avg_forward(xc, out, kh, kw, sh, sw):
    """out [m, C, Ho, Wo] = the kh×kw window means of one chunk xc: sum each window's kh rows (slices of contiguous
    rows), then its kw columns."""
    Ho, Wo = out.shape[2:]
    r = _add_all([xc[:, :, a:a + sh * Ho:sh] for a in range(kh)], np.empty(xc.shape[:2] + (Ho, xc.shape[3]), xc.dtype))
    _add_all([r[..., b:b + sw * Wo:sw] for b in range(kw)], out)
    out *= 1.0 / (kh * kw)
    return out


def _avg_backward(g, gx, kh, kw, sh, sw):
    """gx [m, C, H, W] = the transpose of :func:`_avg_forward` applied to g: g/(kh·kw) spread over each window's
    columns, then rows. Disjoint windows assign (~1.6x faster than adding); windows tiling the image need no zeroing."""
    (Ho, Wo), (H, W) = g.shape[2:], gx.shape[2:]
    disjoint, tiles = sh >= kh and sw >= kw, (sh, sw) == (kh, kw) and (H, W) == (sh * Ho, sw * Wo)
    gk = g * (1.0 / (kh * kw))
    r = (np.empty if tiles else np.zeros)(g.shape[:3] + (W,), g.dtype)
    if not tiles:
        gx[...] = 0
    put = np.copyto if disjoint else lambda dst, v: np.add(dst, v, out=dst)
    for b in range(kw):
        put(r[..., b:b + sw * Wo:sw], gk)
    for a in range(kh):
        put(gx[:, :, a:a + sh * Ho:sh], r)
    return gx


def avg_pool2d(x, kernel_size, stride=None):
    """Mean over kh×kw windows (stride: an int or a pair, default the kernel size), separable, per cache-sized chunk of
    images: :func:`_avg_forward`; the backward :func:`_avg_backward` spreads g/(kh·kw) over each window."""
    x, kh, kw, sh, sw, Ho, Wo = _pool_args(x, kernel_size, stride, "avg")
    out, item = np.empty(x.shape[:2] + (Ho, Wo), x.dtype), x.data[:1].nbytes
    chunked(lambda n0, n1: _avg_forward(x.data[n0:n1], out[n0:n1], kh, kw, sh, sw), len(x.data), item)

    def backward(g):
        gx = np.empty_like(x.data)
        chunked(lambda n0, n1: _avg_backward(g[n0:n1], gx[n0:n1], kh, kw, sh, sw), len(x.data), item)
        return (gx,)
    return make(out, (x,), backward)


def max_pool2d(x, kernel_size, stride=None):
    """Max over k×k windows; the backward routes g to the (first) arg-max of each window.

    A loop over the k×k kernel offsets, each a strided slice of the input (no window copies)."""
    x, kh, kw, sh, sw, Ho, Wo = _pool_args(x, kernel_size, stride, "max")
    out, arg = None, np.zeros((x.shape[0], x.shape[1], Ho, Wo), np.int8 if kh * kw < 128 else np.int32)
    for a, b, sl in _offsets(kh, kw, sh, sw, Ho, Wo):
        v = x.data[sl]
        if out is None:
            out = v.copy()
        else:  # strictly greater: ties go to the first offset
            better = v > out
            np.copyto(out, v, where=better)
            arg[better] = a * kw + b

    def backward(g):
        gx = np.zeros_like(x.data)
        for a, b, sl in _offsets(kh, kw, sh, sw, Ho, Wo):
            gx[sl] += g * (arg == a * kw + b)
        return (gx,)
    return make(out, (x,), backward)


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


def _row_dots(a, b):
    """Σ_l a[n, c, l]·b[n, c, l] → [N, C] for [N, C, L] arrays: one BLAS dot per row (faster than np.einsum)."""
    return (a[..., None, :] @ b[..., :, None])[..., 0, 0]


def _chan_sum(a):
    """Σ over every axis but 1 (channels) of an [N, C, ...] array: a BLAS product with ones along the contiguous
    axis (faster than ``.sum(-1)``), then Σ over N."""
    a = a.reshape(a.shape[0], a.shape[1], -1)
    return (a @ np.ones(a.shape[2], a.dtype)).sum(0)


def _rows(v, x):
    """A per-channel vector as rows [C, L] matching x [N, C, L]: NumPy runs x ∘ rows ~1.6x faster than x ∘ v[:, None]."""
    return np.repeat(np.asarray(v, x.dtype), x.shape[2]).reshape(x.shape[1], x.shape[2])


def _chan_moments(x):
    """Per-channel (mean, biased variance) of x [N, C, L] over N and L, in ONE pass over memory: each chunk's
    mean and centred sum of squares (in cache), merged in float64 (Chan et al.'s parallel update)."""
    def chunk(n0, n1):
        xc = x[n0:n1]
        mean = _chan_sum(xc) / (xc.size // x.shape[1])
        d = xc - _rows(mean, x)
        return xc.size // x.shape[1], mean.astype(np.float64), _row_dots(d, d).sum(0).astype(np.float64)
    n, mean, m2 = 0, 0.0, 0.0
    for k, mk, m2k in chunked(chunk, len(x), x[:1].nbytes):
        delta = mk - mean
        mean, m2, n = mean + delta * k / (n + k), m2 + m2k + delta ** 2 * n * k / (n + k), n + k
    return mean, m2 / n


def batch_norm(x, weight, bias, running_mean, running_var, training, momentum=0.1, eps=1e-5):
    """y = γ·(x − μ)/√(σ² + ε) + β per channel (axis 1), statistics over every other axis.

    Training: μ, σ² of the batch (so over T·N·H·W for folded sequences), running stats updated in place
    with the unbiased variance (PyTorch's convention). Eval: running stats, a per-channel affine map.
    Backward: dx = scale·g − scale·mean(g) − x̂·scale·mean(g·x̂) with scale = γ/√(σ² + ε) (eval: dx = scale·g).
    Every pass runs over cache-sized chunks of the batch (:func:`chunked`); x̂ is recomputed, never stored.
    Textbook twin: batch_norm_textbook.
    """
    x = tensor(x)
    C, n = x.shape[1], x.size // x.shape[1]
    xd = np.ascontiguousarray(x.data).reshape(len(x.data), C, -1)
    if training:
        mu, var = _chan_moments(xd)
        running_mean *= 1 - momentum
        running_mean += momentum * mu
        running_var *= 1 - momentum
        running_var += momentum * var * n / (n - 1 if n > 1 else 1)
    else:
        mu, var = running_mean, running_var
    inv = 1.0 / np.sqrt(var + eps)
    scale = weight.data * inv
    mu_r, scale_r, shift_r = _rows(mu, xd), _rows(scale, xd), _rows(bias.data - mu * scale, xd)
    out, item = np.empty_like(xd), xd[:1].nbytes

    def forward(n0, n1):   # y = x·scale + (β − μ·scale)
        np.multiply(xd[n0:n1], scale_r, out=out[n0:n1])
        out[n0:n1] += shift_r
    chunked(forward, len(xd), item)

    def backward(g):
        g = g.reshape(xd.shape)
        sums = chunked(lambda n0, n1: (_chan_sum(g[n0:n1]), _row_dots(g[n0:n1], xd[n0:n1] - mu_r).sum(0)), len(xd), item)
        gb, gw = np.sum([s[0] for s in sums], axis=0), np.sum([s[1] for s in sums], axis=0) * inv.astype(g.dtype)
        a_r, b_r = _rows(-scale * inv * gw / n, xd), _rows(-scale * gb / n, xd)
        gx = np.empty_like(xd)

        def chunk(n0, n1):  # gx = scale·g + [(x − μ)·(−scale·inv·mean(g·x̂)) − scale·mean(g)]   (training)
            gc, gxc = g[n0:n1], gx[n0:n1]
            if training:
                np.subtract(xd[n0:n1], mu_r, out=gxc)
                gxc *= a_r
                gxc += b_r
                gxc += gc * scale_r
            else:
                np.multiply(gc, scale_r, out=gxc)
        chunked(chunk, len(xd), item)
        return gx.reshape(x.shape), gw, gb
    return make(out.reshape(x.shape), (x, weight, bias), backward)


def batch_norm_textbook(x, weight, bias, running_mean, running_var, training, momentum=0.1, eps=1e-5):
    """The textbook twin of :func:`batch_norm`, tested equal to it: the mean, then the variance, in two passes over
    the batch; x̂ stored. Backward: dx = (γ/σ)·(g − mean(g) − x̂·mean(g·x̂)) in training, (γ/σ)·g in eval."""
    x = tensor(x)
    axes = (0,) + tuple(range(2, x.ndim))   # every axis but the channels
    per_channel = lambda v: np.reshape(v, (1, -1) + (1,) * (x.ndim - 2))  # noqa: E731
    if training:
        mu, n = x.data.mean(axes), x.size // x.shape[1]
        var = ((x.data - per_channel(mu)) ** 2).mean(axes)
        running_mean[...] = (1 - momentum) * running_mean + momentum * mu
        running_var[...] = (1 - momentum) * running_var + momentum * var * n / (n - 1 if n > 1 else 1)
    else:
        mu, var = running_mean, running_var
    xhat = (x.data - per_channel(mu)) / per_channel(np.sqrt(var + eps))
    scale = per_channel(weight.data / np.sqrt(var + eps))

    def backward(g):
        mean = lambda a: a.mean(axes, keepdims=True)  # noqa: E731
        gx = scale * (g - mean(g) - xhat * mean(g * xhat)) if training else scale * g
        return gx, (g * xhat).sum(axes), g.sum(axes)
    return make(per_channel(weight.data) * xhat + per_channel(bias.data), (x, weight, bias), backward)


def layer_norm(x, axes, weight=None, bias=None, eps=1e-5):
    """(x − mean)/√(var + ε)·γ + β over ``axes``, composed from differentiable ops."""
    x = tensor(x)
    xc = x - mean(x, axis=axes, keepdims=True)
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
