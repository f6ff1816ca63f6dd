"""Reverse-mode automatic differentiation on NumPy arrays, in the spirit of micrograd.

A :class:`Tensor` wraps an ``np.ndarray`` (``.data``). An op builds its output with
:func:`make`, passing the parent tensors and a closure ``backward(g) -> grads`` that maps the
gradient of the output to one gradient per parent. ``Tensor.backward()`` sorts the graph
topologically and **accumulates** gradients, so a weight used at every time step receives one
contribution per step. Only leaves (tensors created by the user, e.g. parameters) keep ``.grad``.
"""
import contextlib
import sys

import numpy as np

_GRAD_ENABLED = True


@contextlib.contextmanager
def _grad_mode(enabled):
    global _GRAD_ENABLED
    prev, _GRAD_ENABLED = _GRAD_ENABLED, enabled
    try:
        yield
    finally:
        _GRAD_ENABLED = prev


def no_grad():
    """Inside ``with no_grad():`` no graph is recorded (evaluation, optimiser updates)."""
    return _grad_mode(False)


def enable_grad():
    """Record a graph again inside an outer ``no_grad`` block (relevance and CAM code needs local gradients)."""
    return _grad_mode(True)


def is_grad_enabled():
    return _GRAD_ENABLED


def as_array(data, dtype=None):
    """``data`` as a float array: NumPy float arrays keep their dtype (float64 for gradient checks);
    Python numbers and lists, integer and boolean data become float32 (the library's default dtype)."""
    if isinstance(data, Tensor):
        data = data.data
    keep = isinstance(data, (np.ndarray, np.generic)) and np.issubdtype(data.dtype, np.floating)
    return np.asarray(data, dtype=dtype if dtype is not None or keep else np.float32)


class Tensor:
    """An array that remembers how it was computed.

    >>> from minisnn import Tensor  # the package attaches the operators (functional.py)
    >>> x = Tensor([1.0, 2.0], requires_grad=True); (x * x).sum().backward(); x.grad
    array([2., 4.], dtype=float32)
    """
    __slots__ = ("data", "grad", "requires_grad", "_parents", "_backward", "__weakref__")
    __array_priority__ = 1000  # so that ndarray + Tensor defers to Tensor.__radd__

    def __init__(self, data, requires_grad=False, dtype=None):
        self.data = as_array(data, dtype)
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._parents = ()
        self._backward = None

    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)
    dtype = property(lambda self: self.data.dtype)
    size = property(lambda self: self.data.size)
    T = property(lambda self: self.transpose())

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        flag = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({np.array2string(self.data, precision=4, threshold=20)}{flag})"

    def numpy(self):
        return self.data

    def item(self):
        return self.data.item()

    def detach(self):
        """Same data, cut from the graph."""
        return Tensor(self.data)

    def zero_grad(self):
        self.grad = None

    def backward(self, grad=None):
        """Back-propagate from this tensor; ``grad`` defaults to ones (so a scalar loss needs none)."""
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad")
        grad = np.ones_like(self.data) if grad is None else as_array(grad, self.data.dtype)
        if grad.shape != self.shape:
            raise ValueError(f"backward: grad has shape {grad.shape}, tensor has {self.shape}")
        grads = {id(self): grad}
        for node in reversed(_topological_order(self)):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if node._backward is None:  # a leaf: keep the gradient (its own array, never one shared with others)
                if node.grad is not None:
                    node.grad = node.grad + g
                else:
                    node.grad = g if _unshared(g) else g.copy()
                continue
            for parent, pg in zip(node._parents, node._backward(g)):
                if pg is None or not parent.requires_grad:
                    continue
                key = id(parent)
                grads[key] = pg if key not in grads else grads[key] + pg
            pg = None  # the loop variable must not keep the last gradient alive (see _unshared)


def _unshared(g):
    """True when nothing else can see ``g``'s memory, so a leaf may keep it without a copy (saves a full pass):
    ``g`` is referred to only by the caller's local name (+ this argument + getrefcount's own), and it owns its
    memory or is a whole-array view (a reshape) of an array that only ``g`` refers to. Exact counts, so that an
    interpreter that counts differently only costs a copy."""
    if sys.getrefcount(g) != 3:
        return False
    return g.base is None or (g.base.base is None and g.base.size == g.size and sys.getrefcount(g.base) == 2)


def _topological_order(root):
    """Nodes reachable from ``root`` (that need gradients), parents before children; iterative DFS."""
    order, visited, stack = [], set(), [(root, False)]
    while stack:
        node, done = stack.pop()
        if done:  # every parent has been emitted: the node may follow them
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        stack.extend((p, False) for p in node._parents if p.requires_grad and id(p) not in visited)
    return order


def make(data, parents, backward):
    """Wrap ``data`` as the output of an op; record ``backward`` only if a parent needs gradients."""
    out = Tensor.__new__(Tensor)
    out.data, out.grad, out._parents, out._backward = data, None, (), None
    out.requires_grad = _GRAD_ENABLED and any(p.requires_grad for p in parents)
    if out.requires_grad:
        out._parents, out._backward = tuple(parents), backward
    return out


def tensor(x):
    """``x`` as a Tensor (no copy when it already is one)."""
    return x if isinstance(x, Tensor) else Tensor(x)


def unbroadcast(grad, shape):
    """Sum ``grad`` over the axes NumPy broadcasting added or stretched, back to ``shape``."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(i + extra for i, n in enumerate(shape) if n == 1 and grad.shape[i + extra] != 1)
    return grad.sum(axis=axes, keepdims=True).reshape(shape)
