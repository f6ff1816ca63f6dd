"""Modules: parameters, train/eval, state_dict, atomic pickle-free save/load, and the standard layers.

Stateless layers accept both ``[N, ...]`` and time-first ``[T, N, ...]`` input: image layers
(Conv2d, BatchNorm2d, pools) fold a 5-D ``[T, N, C, H, W]`` input into ``[T·N, C, H, W]`` and unfold
the result, exactly like spikingjelly's ``SeqToANNContainer``. Linear acts on the last axis.
"""
import contextlib
import glob
import os
import tempfile
import zipfile

import numpy as np

from . import functional as F
from .autograd import Tensor

# ----------------------------------------------------------------------------- recording hooks

_RECORDERS = []


@contextlib.contextmanager
def recording():
    """Record every module call inside the block: yields a list of ``(module, input, output, extras)``.

    ``input``/``output`` are the arrays seen by the module; neuron layers put their membranes into
    ``extras`` (``u``: pre-reset membrane, ``h``: post-reset membrane, each ``[T, N, ...]``).
    Relevance propagation and the analysis tools are built on this.
    """
    records = []
    _RECORDERS.append(records)
    try:
        yield records
    finally:
        _RECORDERS.remove(records)


def is_recording():
    return bool(_RECORDERS)


class Parameter(Tensor):
    """A Tensor that a Module registers as trainable (requires_grad=True)."""
    __slots__ = ()

    def __init__(self, data, dtype=None):
        super().__init__(data, requires_grad=True, dtype=dtype)


class Module:
    """Base class. Attributes that are Parameters, Modules or registered buffers are tracked in order."""

    def __init__(self):
        object.__setattr__(self, "_params", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "extras", None)

    def __setattr__(self, name, value):
        if "_params" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}.__init__ must call super().__init__() before setting attributes")
        for store in (self._params, self._modules, self._buffers):
            store.pop(name, None)
        if isinstance(value, Parameter):
            self._params[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def register_buffer(self, name, array):
        """A non-trainable array saved in the state_dict (e.g. BatchNorm running statistics)."""
        setattr(self, name, array)
        self._buffers[name] = True

    def __call__(self, *args, **kwargs):
        out = self.forward(*args, **kwargs)
        for records in _RECORDERS:
            records.append((self, args[0] if len(args) == 1 else args, out, self.extras))
        return out

    def forward(self, *args):
        raise NotImplementedError

    def named_modules(self, prefix=""):
        yield prefix, self
        for name, m in self._modules.items():
            yield from m.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        return [m for _, m in self.named_modules()]

    def named_parameters(self):
        for mname, m in self.named_modules():
            for pname, p in m._params.items():
                yield (f"{mname}.{pname}" if mname else pname), p

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def train(self, mode=True):
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def state_dict(self):
        """Name -> array (a copy) for every parameter and buffer."""
        state = {}
        for mname, m in self.named_modules():
            for name in list(m._params) + list(m._buffers):
                value = getattr(m, name)
                state[f"{mname}.{name}" if mname else name] = np.array(value.data if isinstance(value, Tensor) else value)
        return state

    def load_state_dict(self, state):
        """Copy arrays into parameters and buffers; names and shapes must match exactly."""
        own = self.state_dict()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        for mname, m in self.named_modules():
            for name in list(m._params) + list(m._buffers):
                key = f"{mname}.{name}" if mname else name
                new = np.asarray(state[key])
                if new.shape != own[key].shape:
                    raise ValueError(f"load_state_dict: '{key}' has shape {new.shape}, expected {own[key].shape}")
                target = getattr(m, name)
                if isinstance(target, Tensor):
                    target.data = new.astype(target.dtype, copy=True)
                else:
                    target[...] = new
        return self

    def save(self, path):
        """Write the state_dict as an .npz (no pickle), atomically: temp file ``.<name>.<pid>.*.tmp`` in the same
        folder + rename. Temp files of the same target left by killed processes are removed first."""
        path = os.path.abspath(os.fspath(path))
        folder, name = os.path.split(path)
        for stale in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(name)}.*.tmp")):
            if not _alive(int(stale.rsplit(".", 3)[-3])):
                os.remove(stale)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.{os.getpid()}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **self.state_dict())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise

    def load(self, path):
        """Load a checkpoint written by :meth:`save`; a corrupt or mismatching file raises ValueError."""
        with open(os.fspath(path), "rb") as f:   # FileNotFoundError as usual
            if f.read(2) != b"PK":   # a zip archive
                raise ValueError(f"load: {path} is not a minisnn checkpoint (an .npz file written by Module.save)")
        try:
            with np.load(os.fspath(path), allow_pickle=False) as z:
                state = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
            raise ValueError(f"load: {path} is not a valid minisnn checkpoint ({exc})") from None
        return self.load_state_dict(state)

    def __repr__(self):
        inner = "".join(f"\n  ({n}): " + repr(m).replace("\n", "\n  ") for n, m in self._modules.items())
        return f"{type(self).__name__}({self.extra_repr()}{inner}{chr(10) if inner else ''})"

    def extra_repr(self):
        return ""


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # alive, another user's
        pass
    return True


def _fold(fn, x, ndim=4):
    """Apply an image op to [N, C, H, W] or to a time-first [T, N, C, H, W] by folding T into N."""
    if x.ndim == ndim:
        return fn(x)
    if x.ndim != ndim + 1:
        raise ValueError(f"expected a {ndim}-D [N, C, H, W] or {ndim + 1}-D [T, N, C, H, W] input, got shape {x.shape}")
    T, N = x.shape[:2]
    y = fn(F.reshape(x, (T * N,) + x.shape[2:]))
    return F.reshape(y, (T, N) + y.shape[1:])


def _count(v, name, layer, low=1):
    """``v`` as an int >= ``low`` (sizes, strides), else a ValueError naming the layer and the argument."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
        raise ValueError(f"{layer}: {name} must be an integer >= {low}, got {v!r}")
    return int(v)


def _init_uniform(rng, shape, fan_in, dtype=np.float32):
    """PyTorch's default init: U(−1/√fan_in, 1/√fan_in)."""
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, shape).astype(dtype)


class Linear(Module):
    """y = x Wᵀ + b, W of shape (out_features, in_features) as in PyTorch; acts on the last axis."""

    def __init__(self, in_features, out_features, bias=True, rng=None):
        super().__init__()
        rng = rng or np.random.default_rng(0)
        self.in_features, self.out_features = (_count(v, n, "Linear") for v, n in
                                               ((in_features, "in_features"), (out_features, "out_features")))
        self.weight = Parameter(_init_uniform(rng, (out_features, in_features), in_features))
        self.bias = Parameter(_init_uniform(rng, (out_features,), in_features)) if bias else None

    def forward(self, x):
        if x.shape[-1] != self.in_features:
            raise ValueError(f"Linear: expected last axis {self.in_features}, got input shape {x.shape}")
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class Conv2d(Module):
    """2-D convolution, weight (out_channels, in_channels, kh, kw) as in PyTorch."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True, rng=None):
        super().__init__()
        rng = rng or np.random.default_rng(0)
        kh, kw = F._pair(kernel_size, "kernel_size")
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels), ("kernel_size", min(kh, kw)),
                        ("stride", stride)):
            _count(v, name, "Conv2d")
        F._pair(padding, "Conv2d: padding")
        self.stride, self.padding = int(stride), padding
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, (kh, kw)
        fan_in = in_channels * kh * kw
        self.weight = Parameter(_init_uniform(rng, (out_channels, in_channels, kh, kw), fan_in))
        self.bias = Parameter(_init_uniform(rng, (out_channels,), fan_in)) if bias else None

    def forward(self, x):
        return _fold(lambda z: F.conv2d(z, self.weight, self.bias, self.stride, self.padding), x)

    def extra_repr(self):
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class BatchNorm2d(Module):
    """Batch norm over channels; for [T, N, C, H, W] input the statistics run over T·N·H·W."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        if not (eps > 0 and 0 <= momentum <= 1):
            raise ValueError(f"BatchNorm2d: need eps > 0 and momentum in [0, 1], got eps={eps}, momentum={momentum}")
        self.num_features, self.eps, self.momentum = _count(num_features, "num_features", "BatchNorm2d"), eps, momentum
        self.weight = Parameter(np.ones(num_features, np.float32))
        self.bias = Parameter(np.zeros(num_features, np.float32))
        self.register_buffer("running_mean", np.zeros(num_features, np.float32))
        self.register_buffer("running_var", np.ones(num_features, np.float32))

    def forward(self, x):
        if x.ndim < 4 or x.shape[-3] != self.num_features:
            raise ValueError(f"BatchNorm2d({self.num_features}): expected [N, {self.num_features}, H, W] or "
                             f"[T, N, {self.num_features}, H, W], got shape {x.shape}")
        return _fold(lambda z: F.batch_norm(z, self.weight, self.bias, self.running_mean, self.running_var,
                                            self.training, self.momentum, self.eps), x)

    def extra_repr(self):
        return str(self.num_features)


class _Pool(Module):
    def __init__(self, kernel_size, stride=None):
        super().__init__()
        for k in F._pair(kernel_size, "kernel_size") + (() if stride is None else (stride,)):
            _count(k, "kernel_size and stride", type(self).__name__)
        self.kernel_size, self.stride = kernel_size, stride

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}"


class AvgPool2d(_Pool):
    def forward(self, x):
        return _fold(lambda z: F.avg_pool2d(z, self.kernel_size, self.stride), x)


class MaxPool2d(_Pool):
    def forward(self, x):
        return _fold(lambda z: F.max_pool2d(z, self.kernel_size, self.stride), x)


class AdaptiveAvgPool2d(Module):
    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x):
        return _fold(lambda z: F.adaptive_avg_pool2d(z, self.output_size), x)


class Flatten(Module):
    """Flatten the trailing axes from ``start_dim`` (default −3: C, H, W), so [T, N, C, H, W] -> [T, N, C·H·W]."""

    def __init__(self, start_dim=-3):
        super().__init__()
        self.start_dim = start_dim

    def forward(self, x):
        k = self.start_dim % x.ndim
        return F.reshape(x, x.shape[:k] + (-1,))


class Dropout(Module):
    """Inverted dropout in training mode; identity in eval mode. Randomness from ``rng``."""

    def __init__(self, p=0.5, rng=None):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p, self.rng = p, rng or np.random.default_rng(0)

    def forward(self, x):
        return F.dropout(x, self.p, self.rng, self.training)


class Identity(Module):
    def forward(self, x):
        return x


class ReLU(Module):
    def forward(self, x):
        return F.relu(x)


class Sequential(Module):
    """Layers applied in order; indexable like a list."""

    def __init__(self, *layers):
        super().__init__()
        for i, layer in enumerate(layers):
            setattr(self, str(i), layer)

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def forward(self, x):
        for layer in self._modules.values():
            x = layer(x)
        return x
