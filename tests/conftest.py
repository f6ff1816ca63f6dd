"""Shared test helpers: float64 finite-difference gradient checks."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import minisnn as ms  # noqa: E402



def numeric_grad(f, arrays, eps=1e-6):
    """Central differences of the scalar f(*arrays) w.r.t. every array (float64)."""
    grads = []
    for a in arrays:
        g = np.zeros_like(a)
        it = np.nditer(a, flags=["multi_index"])
        for _ in it:
            i = it.multi_index
            old = a[i]
            a[i] = old + eps
            fp = f(*arrays)
            a[i] = old - eps
            fm = f(*arrays)
            a[i] = old
            g[i] = (fp - fm) / (2 * eps)
        grads.append(g)
    return grads


def check_grad(fn, *arrays, rtol=1e-5, atol=1e-6, weights_seed=0):
    """Compare autograd's gradient of sum(w * fn(*tensors)) with finite differences (float64)."""
    arrays = [np.array(a, dtype=np.float64) for a in arrays]
    out_shape = fn(*[ms.Tensor(a) for a in arrays]).shape
    w = np.random.default_rng(weights_seed).normal(size=out_shape)
    tensors = [ms.Tensor(a.copy(), requires_grad=True) for a in arrays]
    (fn(*tensors) * w).sum().backward()
    num = numeric_grad(lambda *xs: float((fn(*[ms.Tensor(x) for x in xs]).data * w).sum()), arrays)
    for k, (t, g) in enumerate(zip(tensors, num)):
        assert t.grad is not None, f"argument {k} received no gradient"
        assert t.grad.shape == t.shape
        np.testing.assert_allclose(t.grad, g, rtol=rtol, atol=atol, err_msg=f"gradient of argument {k}")
