"""The fast image ops against their textbook twins (DESIGN.md, the C core's decision): conv2d (wide rows, per-tap
GEMMs, chunks on every core) == conv2d_textbook (im2col + one GEMM, col2im), batch_norm (chunked, Chan-merged
moments, BLAS ones-vectors) == batch_norm_textbook (two passes). Outputs, running statistics and every gradient,
in float64, with one chunk and with one image per chunk on three threads. The twins are gradient-checked too."""
import numpy as np
import pytest
from conftest import check_grad

import minisnn as ms
from minisnn import core
from minisnn import functional as F


@pytest.fixture(params=["one chunk", "one image per chunk"])
def chunks(request, monkeypatch):
    if request.param == "one image per chunk":
        monkeypatch.setattr(core, "CHUNK_BYTES", 1)
        monkeypatch.setattr(core, "NUM_THREADS", 3)


def outputs_and_grads(fn, arrays, seed=0):
    """fn(*tensors) and the gradients of Σ r·fn(*tensors) (r random) with respect to every input."""
    tensors = [ms.Tensor(a.copy(), requires_grad=True) for a in arrays]
    out = fn(*tensors)
    (out * np.random.default_rng(seed).normal(size=out.shape)).sum().backward()
    return [out.data] + [t.grad for t in tensors]


@pytest.mark.parametrize("C,O,k,stride,padding", [(2, 16, 3, 1, 1), (8, 4, 3, 1, 1), (16, 8, 3, 1, 0), (3, 5, 3, 2, 1),
                                                  (9, 3, 2, 2, 0), (10, 6, 1, 1, 0), (12, 4, 3, 1, (2, 0))])
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_equals_its_textbook_twin(C, O, k, stride, padding, bias, chunks):
    """C ≥ 8 at stride 1 takes the wide-row path, C < 8 and stride 2 the strided one."""
    rng = np.random.default_rng(C * 100 + O)
    arrays = [rng.normal(size=(5, C, 9, 7)), rng.normal(size=(O, C, k, k))] + ([rng.normal(size=O)] if bias else [])
    fast = outputs_and_grads(lambda *t: F.conv2d(*t, stride=stride, padding=padding), arrays)
    plain = outputs_and_grads(lambda *t: F.conv2d_textbook(*t, stride=stride, padding=padding), arrays)
    assert fast[0].shape == plain[0].shape and len(fast) == len(plain)
    for name, a, b in zip(["out", "dx", "dW", "db"], fast, plain):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("shape", [(6, 3, 5, 4), (7, 4)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_equals_its_textbook_twin(shape, training, chunks):
    rng = np.random.default_rng(len(shape))
    C = shape[1]
    arrays = [rng.normal(1.0, 2.0, size=shape), rng.uniform(0.5, 2, C), rng.normal(size=C)]
    stats = [(rng.normal(size=C), rng.uniform(0.5, 2, C)) for _ in range(2)]
    stats[1] = (stats[0][0].copy(), stats[0][1].copy())
    results = []
    for fn, (rm, rv) in zip((F.batch_norm, F.batch_norm_textbook), stats):
        results.append(outputs_and_grads(lambda x, w, b: fn(x, w, b, rm, rv, training, 0.3, 1e-5), arrays))
    for name, a, b in zip(["out", "dx", "dweight", "dbias"], *results):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-11, err_msg=name)
    for a, b in zip(stats[0], stats[1]):   # running statistics, unbiased variance in training
        np.testing.assert_allclose(a, b, rtol=1e-12)
    if not training:
        np.testing.assert_array_equal(stats[0][0], stats[1][0])


def test_the_twins_are_gradient_checked():
    rng = np.random.default_rng(7)
    check_grad(lambda x, w, b: F.conv2d_textbook(x, w, b, stride=2, padding=1),
               rng.normal(size=(2, 3, 5, 6)), rng.normal(size=(4, 3, 3, 3)), rng.normal(size=4))
    rm, rv = np.zeros(3), np.ones(3)
    check_grad(lambda x, w, b: F.batch_norm_textbook(x, w, b, rm, rv, True), rng.normal(size=(4, 3, 2, 2)),
               rng.uniform(0.5, 2, 3), rng.normal(size=3))


def test_conv2d_textbook_by_hand():
    """A 1-channel 3×3 input, a 2×2 kernel of ones: each output is the sum of its window."""
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    out = F.conv2d_textbook(ms.Tensor(x), ms.Tensor(np.ones((1, 1, 2, 2))), ms.Tensor(np.array([0.5]))).data
    np.testing.assert_array_equal(out[0, 0], [[8.5, 12.5], [20.5, 24.5]])
