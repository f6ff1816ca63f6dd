"""Optimisers (SGD with momentum, Adam/AdamW) and cosine annealing. Updates run under no_grad on ``.data``."""
import math

import numpy as np

from .autograd import Tensor


def _check(name, value, ok, what):
    if not ok(value):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return value


class Optimizer:
    def __init__(self, params, lr, weight_decay=0.0):
        self.params = [p for p in params]
        if not self.params:
            raise ValueError("optimizer got an empty parameter list")
        for i, p in enumerate(self.params):
            if not (isinstance(p, Tensor) and p.requires_grad):
                raise TypeError(f"params[{i}] must be a Tensor with requires_grad=True (e.g. model.parameters()), "
                                f"got {type(p).__name__}")
        self.lr = float(_check("lr", lr, lambda v: 0 < v < math.inf, "a finite number > 0"))
        self.weight_decay = _check("weight_decay", weight_decay, lambda v: 0 <= v < math.inf, "finite and >= 0")

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def grads(self):
        """(parameter, gradient) of every parameter that has one; a gradient of the wrong shape is a ValueError."""
        for i, p in enumerate(self.params):
            if p.grad is not None:
                if np.shape(p.grad) != p.shape:
                    raise ValueError(f"params[{i}]: gradient of shape {np.shape(p.grad)} for a parameter of shape {p.shape}")
                yield i, p, p.grad


class SGD(Optimizer):
    """v ← μ·v + (g + λ·w);  w ← w − lr·v   (PyTorch's SGD; μ = momentum, λ = weight_decay)."""

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        super().__init__(params, lr, weight_decay)
        self.momentum = _check("momentum", momentum, lambda v: 0 <= v < math.inf, "finite and >= 0")
        self.v = [np.zeros_like(p.data) for p in self.params]

    def step(self):
        for i, p, g in self.grads():
            v = self.v[i]
            g = g + self.weight_decay * p.data if self.weight_decay else g
            if self.momentum:
                v *= self.momentum
                v += g
                g = v
            p.data -= (self.lr * g).astype(p.dtype)


class Adam(Optimizer):
    """Adam (Kingma & Ba): m ← β1·m + (1−β1)·g, v ← β2·v + (1−β2)·g², w ← w − lr·m̂/(√v̂ + ε).

    ``weight_decay`` adds λ·w to g (Adam's L2); ``decoupled=True`` shrinks w by lr·λ·w instead (AdamW).
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
        super().__init__(params, lr, weight_decay)
        self.b1, self.b2 = (_check("betas", b, lambda v: 0 <= v < 1, "two numbers in [0, 1)") for b in betas)
        self.eps = _check("eps", eps, lambda v: 0 <= v < math.inf, "finite and >= 0")
        self.decoupled = decoupled
        self.m = [np.zeros_like(p.data) for p in self.params]
        self.v = [np.zeros_like(p.data) for p in self.params]
        self.t = 0

    def step(self):
        self.t += 1
        c1, c2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        for i, p, g in self.grads():
            m, v = self.m[i], self.v[i]
            if self.weight_decay and not self.decoupled:
                g = g + self.weight_decay * p.data
            m *= self.b1
            m += (1 - self.b1) * g
            v *= self.b2
            v += (1 - self.b2) * g * g
            if self.weight_decay and self.decoupled:
                p.data -= (self.lr * self.weight_decay) * p.data
            p.data -= (self.lr / c1 * m / (np.sqrt(v / c2) + self.eps)).astype(p.dtype)


def AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
    """Adam with decoupled weight decay (Loshchilov & Hutter)."""
    return Adam(params, lr, betas, eps, weight_decay, decoupled=True)


class CosineAnnealing:
    """lr(e) = lr_min + (lr0 − lr_min)·(1 + cos(π·e/T_max))/2; call ``step()`` once per epoch."""

    def __init__(self, optimizer, T_max, lr_min=0.0):
        _check("T_max", T_max, lambda v: v >= 1, "an epoch count >= 1")
        _check("lr_min", lr_min, lambda v: 0 <= v <= optimizer.lr, f"in [0, lr = {optimizer.lr}]")
        self.opt, self.T_max, self.lr_min, self.lr0, self.epoch = optimizer, T_max, lr_min, optimizer.lr, 0

    def step(self):
        self.epoch += 1
        e = min(self.epoch, self.T_max)
        self.opt.lr = self.lr_min + (self.lr0 - self.lr_min) * (1 + math.cos(math.pi * e / self.T_max)) / 2
