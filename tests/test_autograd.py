"""Autograd engine and every differentiable op: float64 finite-difference gradient checks."""
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import minisnn as ms
from minisnn import core, functional as F
from minisnn.autograd import unbroadcast
from conftest import check_grad

R = np.random.default_rng(42)


def rnd(*shape):
    return R.normal(size=shape)


def pos(*shape):
    return R.uniform(0.5, 2.0, size=shape)


ELEMENTWISE = {
    "add": (lambda a, b: a + b, [rnd(3, 4), rnd(4)]),
    "sub": (lambda a, b: a - b, [rnd(3, 1), rnd(3, 4)]),
    "rsub": (lambda a: 2.0 - a, [rnd(3)]),
    "mul": (lambda a, b: a * b, [rnd(2, 3), rnd(2, 3)]),
    "div": (lambda a, b: a / b, [rnd(2, 3), pos(3)]),
    "rdiv": (lambda a: 1.0 / a, [pos(4)]),
    "neg": (lambda a: -a, [rnd(3)]),
    "pow": (lambda a: a ** 3, [rnd(5)]),
    "exp": (F.exp, [rnd(5)]),
    "log": (F.log, [pos(5)]),
    "sqrt": (F.sqrt, [pos(5)]),
    "abs": (F.abs, [pos(5) * np.sign(rnd(5))]),
    "relu": (F.relu, [pos(6) * np.sign(rnd(6))]),
    "sigmoid": (F.sigmoid, [rnd(5)]),
    "tanh": (F.tanh, [rnd(5)]),
    "clip": (lambda a: F.clip(a, -0.5, 0.5), [np.array([-1.0, -0.2, 0.1, 0.7])]),
    "where": (lambda a, b: F.where(np.array([True, False, True]), a, b), [rnd(3), rnd(3)]),
    "matmul": (lambda a, b: a @ b, [rnd(2, 3, 4), rnd(4, 5)]),
    "linear": (lambda x, w, b: F.linear(x, w, b), [rnd(2, 3, 4), rnd(5, 4), rnd(5)]),
    "sum_axis": (lambda a: a.sum(axis=1), [rnd(2, 3, 4)]),
    "sum_keep": (lambda a: a.sum(axis=(0, 2), keepdims=True), [rnd(2, 3, 4)]),
    "mean_axis": (lambda a: a.mean(axis=-1), [rnd(2, 3, 4)]),
    "mean_all": (lambda a: a.mean(), [rnd(2, 3)]),
    "max_axis": (lambda a: a.max(axis=1), [rnd(3, 5)]),
    "max_all": (lambda a: a.max(), [rnd(3, 5)]),
    "reshape": (lambda a: a.reshape(6, 2) * np.arange(12).reshape(6, 2), [rnd(3, 4)]),
    "transpose": (lambda a: a.transpose(2, 0, 1), [rnd(2, 3, 4)]),
    "getitem_slice": (lambda a: a[1:, ::2], [rnd(3, 4)]),
    "getitem_fancy": (lambda a: a[[0, 2, 0]], [rnd(3, 2)]),
    "stack": (lambda a, b: F.stack([a, b], axis=1), [rnd(2, 3), rnd(2, 3)]),
    "concat": (lambda a, b: F.concat([a, b], axis=1), [rnd(2, 3), rnd(2, 1)]),
    "softmax": (lambda a: F.softmax(a, axis=-1), [rnd(3, 4)]),
    "log_softmax": (lambda a: F.log_softmax(a, axis=0), [rnd(3, 4)]),
    "layer_norm": (lambda a, w, b: F.layer_norm(a, (-1,), w, b), [rnd(3, 5), rnd(5), rnd(5)]),
}


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_op_gradients(name):
    fn, args = ELEMENTWISE[name]
    check_grad(fn, *args)


@pytest.fixture(params=["one chunk", "chunk of 1 image"])
def chunks(request, monkeypatch):
    """Image ops work on cache-sized chunks of the batch: check both one chunk and one image per chunk."""
    if request.param != "one chunk":
        monkeypatch.setattr(core, "CHUNK_BYTES", 1)


@pytest.mark.parametrize("cin", [3, 8])   # dW from columns, or one GEMM per tap ("wide rows": stride 1, C >= 8)
@pytest.mark.parametrize("stride,padding,bias", [(1, 0, True), (1, 1, False), (2, 1, True), (2, (0, 2), True)])
def test_conv2d_gradient(stride, padding, bias, cin, chunks):
    args = [rnd(3, cin, 7, 6), rnd(4, cin, 3, 2)] + ([rnd(4)] if bias else [])
    check_grad(lambda x, w, *b: F.conv2d(x, w, b[0] if b else None, stride, padding), *args)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("cin", [3, 8])   # strided taps, or "wide rows" (stride 1, C >= 8)
def test_conv2d_matches_direct_loop(stride, cin, chunks):
    x, w, b = rnd(3, cin, 6, 5), rnd(4, cin, 3, 3), rnd(4)
    out = F.conv2d(ms.Tensor(x), ms.Tensor(w), ms.Tensor(b), stride=stride, padding=1).data
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    ref = np.zeros(out.shape)
    s = stride
    for n in range(3):
        for o in range(4):
            for i in range(out.shape[2]):
                for j in range(out.shape[3]):
                    ref[n, o, i, j] = np.sum(xp[n, :, s * i:s * i + 3, s * j:s * j + 3] * w[o]) + b[o]
    np.testing.assert_allclose(out, ref, atol=1e-12)


@pytest.mark.parametrize("op", ["avg", "max"])
@pytest.mark.parametrize("k,s", [(2, None), (3, 2), (2, 1), (2, 3)])
def test_pool_gradients(op, k, s, chunks):
    fn = F.avg_pool2d if op == "avg" else F.max_pool2d
    check_grad(lambda x: fn(x, k, s), rnd(2, 3, 7, 6))
    check_grad(lambda x: fn(x, k, s), rnd(2, 3, 6, 8))


def test_pool_values(chunks):
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    np.testing.assert_array_equal(F.avg_pool2d(ms.Tensor(x), 2).data[0, 0], [[2.5, 4.5], [10.5, 12.5]])
    np.testing.assert_array_equal(F.max_pool2d(ms.Tensor(x), 2).data[0, 0], [[5, 7], [13, 15]])


def test_adaptive_avg_pool():
    x = rnd(2, 3, 7, 5)
    out = F.adaptive_avg_pool2d(ms.Tensor(x), (3, 2)).data
    # PyTorch's bins for 7 -> 3: [0,3), [2,5), [4,7); for 5 -> 2: [0,3), [2,5)
    np.testing.assert_allclose(out[..., 1, 0], x[..., 2:5, 0:3].mean((-2, -1)))
    check_grad(lambda a: F.adaptive_avg_pool2d(a, (3, 2)), x)


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_gradient(training, chunks):
    rm, rv = R.normal(size=3), R.uniform(0.5, 2, 3)

    def fn(x, w, b):
        return F.batch_norm(x, w, b, rm.copy(), rv.copy(), training)
    check_grad(fn, rnd(4, 3, 2, 2), rnd(3), rnd(3), rtol=1e-4)


def test_batch_norm_statistics(chunks):
    x = rnd(8, 3, 4, 4) * 3 + 1
    rm, rv = np.zeros(3), np.ones(3)
    out = F.batch_norm(ms.Tensor(x), ms.Tensor(np.ones(3)), ms.Tensor(np.zeros(3)), rm, rv, True).data
    np.testing.assert_allclose(out.mean((0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(out.var((0, 2, 3)), 1, atol=1e-4)
    np.testing.assert_allclose(rm, 0.1 * x.mean((0, 2, 3)))
    np.testing.assert_allclose(rv, 0.9 + 0.1 * x.var((0, 2, 3), ddof=1))


def test_batch_norm_float32_large_mean(chunks):
    """The one-pass chunked moments stay accurate when the mean dwarfs the spread (no E[x²] − μ² cancellation)."""
    x = (R.normal(size=(16, 2, 5, 5)) + 1000.0).astype(np.float32)
    rm, rv = np.zeros(2), np.ones(2)
    F.batch_norm(ms.Tensor(x), ms.Tensor(np.ones(2, np.float32)), ms.Tensor(np.zeros(2, np.float32)), rm, rv, True)
    np.testing.assert_allclose(rv, 0.9 + 0.1 * x.astype(np.float64).var((0, 2, 3), ddof=1), rtol=1e-4)


def test_floor_straight_through():
    x = ms.Tensor(np.array([-1.5, -0.2, 0.0, 0.7, 2.3]), requires_grad=True)
    y = F.floor_ste(x)
    np.testing.assert_array_equal(y.data, [-2, -1, 0, 0, 2])
    (y * np.arange(5.0)).sum().backward()
    np.testing.assert_array_equal(x.grad, np.arange(5.0))  # identity gradient


def test_dropout_mask_and_scale():
    x = ms.Tensor(np.ones((1000,)), requires_grad=True)
    y = F.dropout(x, 0.3, np.random.default_rng(0))
    kept = y.data != 0
    assert abs(kept.mean() - 0.7) < 0.05
    np.testing.assert_allclose(y.data[kept], 1 / 0.7)
    y.sum().backward()
    np.testing.assert_allclose(x.grad, y.data)
    assert F.dropout(x, 0.3, np.random.default_rng(0), training=False) is x


def test_gradient_accumulates_over_uses():
    w = ms.Tensor(np.array([2.0]), requires_grad=True)
    y = w * 1.0
    for _ in range(4):
        y = y + w * 3.0
    y.sum().backward()
    np.testing.assert_allclose(w.grad, [13.0])
    (w * 2).sum().backward()  # a second backward accumulates into .grad
    np.testing.assert_allclose(w.grad, [15.0])


def test_leaf_gradients_own_their_memory():
    """Leaves keep a fresh gradient without a copy, but never one another array (or the caller) can see."""
    x, y = (ms.Tensor(np.ones((2, 3)), requires_grad=True) for _ in range(2))
    (x + y).sum().backward()            # add hands the same array to both parents
    assert not np.shares_memory(x.grad, y.grad)
    x.grad = y.grad = None
    g = np.full((2, 3), 2.0)
    (x + y).backward(g)                 # the caller's array
    assert not np.shares_memory(x.grad, g) and not np.shares_memory(y.grad, g)
    x.grad = None
    z = x.reshape(3, 2)                 # a view of the leaf's data: its gradient is a view of g
    z.backward(g.reshape(3, 2))
    assert not np.shares_memory(x.grad, g)
    x.grad = None
    (x * 3.0).sum().backward()          # a fresh product: kept as is (no copy), and correct
    np.testing.assert_array_equal(x.grad, np.full((2, 3), 3.0))


def test_diamond_graph_order():
    """A node reached through two paths gets both contributions before propagating further."""
    x = ms.Tensor(np.array(1.5), requires_grad=True)
    a = x * 2
    b = a * a
    c = a + b
    d = b * c
    d.backward()
    # d = (2x)^2 ((2x) + (2x)^2) = 8x^3 + 16x^4  -> d' = 24x^2 + 64x^3
    np.testing.assert_allclose(x.grad, 24 * 1.5 ** 2 + 64 * 1.5 ** 3)


def test_no_grad_records_nothing():
    x = ms.Tensor(np.ones(3), requires_grad=True)
    with ms.no_grad():
        y = x * 2
    assert not y.requires_grad and y._backward is None
    assert ms.is_grad_enabled()


def test_dtype_preservation():
    for dt in (np.float32, np.float64):
        x = ms.Tensor(np.ones((2, 3), dt), requires_grad=True)
        y = (F.exp(x) * 2.0 + 1.0) / 3.0 - x.mean()
        assert y.dtype == dt
        y.sum().backward()
        assert x.grad.dtype == dt
    assert ms.Tensor([1, 2]).dtype == np.float32


@settings(max_examples=40, deadline=None)
@given(hnp.array_shapes(min_dims=1, max_dims=4, max_side=4), st.data())
def test_unbroadcast_inverts_broadcasting(shape, data):
    target = tuple(data.draw(st.sampled_from([1, n])) for n in shape)
    target = target[data.draw(st.integers(0, len(target))):]
    g = np.ones(shape)
    out = unbroadcast(g, target)
    assert out.shape == target
    assert out.sum() == g.sum()


def test_backward_errors():
    with pytest.raises(RuntimeError):
        ms.Tensor([1.0]).backward()
    x = ms.Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(ValueError, match="grad has shape"):
        (x * 2).backward(np.ones(2))
    with pytest.raises(ValueError, match="matmul"):
        x @ x
    with pytest.raises(ValueError, match="conv2d"):
        F.conv2d(ms.Tensor(np.ones((1, 2, 4, 4))), ms.Tensor(np.ones((1, 3, 3, 3))))


def _conv_sum(args):
    x, w = args
    return float(F.conv2d(ms.Tensor(x), ms.Tensor(w), padding=1).data.sum())


def test_chunked_ops_in_a_forked_child(monkeypatch):
    """The thread pool behind the chunked image ops is per process: a forked child (multiprocessing's default
    on Linux) gets its own instead of waiting forever on its parent's threads, which do not survive a fork."""
    import multiprocessing
    monkeypatch.setattr(core, "CHUNK_BYTES", 1)
    args = (rnd(6, 2, 5, 5), rnd(3, 2, 3, 3))
    expected = _conv_sum(args)   # creates the pool in this process
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply_async(_conv_sum, (args,)).get(timeout=30) == pytest.approx(expected)


@pytest.mark.parametrize("env,want", [({}, 1), ({"MINISNN_BLAS_THREADS": "2"}, 2)])
def test_import_runs_blas_on_one_thread(env, want):
    """minisnn's own threads split the work, so importing it sets BLAS to one thread (unless told otherwise)."""
    import subprocess
    import sys
    code = ("import numpy, threadpoolctl, minisnn; "
            "print(max(i['num_threads'] for i in threadpoolctl.threadpool_info() if i['user_api'] == 'blas'))")
    base = {k: v for k, v in os.environ.items() if k != "MINISNN_BLAS_THREADS"}
    env = {**base, "MINISNN_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2", **env}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[-1]) == want
