"""Losses on time-first outputs. ``logits`` is [N, K] or [T, N, K]; labels are int class indices [N]
or soft label distributions [N, K] (mixed-sample augmentation gives soft labels)."""
import numpy as np

from . import functional as F
from .autograd import tensor


def _targets(labels, n, k, dtype):
    """Labels as an [N, K] distribution: integer indices -> one-hot; soft rows are checked to sum to 1."""
    labels = np.asarray(labels)
    if n == 0:
        raise ValueError("labels: empty batch (a loss over 0 samples is undefined)")
    if labels.ndim == 1:
        if labels.shape[0] != n or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be {n} integer class indices, got {labels.dtype} {labels.shape}")
        if labels.size and (labels.min() < 0 or labels.max() >= k):
            raise ValueError(f"labels must lie in [0, {k}), got range [{labels.min()}, {labels.max()}]")
        return np.eye(k, dtype=dtype)[labels]
    if labels.shape != (n, k) or not np.allclose(labels.sum(1), 1, atol=1e-4):
        raise ValueError(f"soft labels must be an [N, K] = {(n, k)} array of distributions, got {labels.shape}")
    return labels.astype(dtype)


def cross_entropy(logits, labels):
    """CE = −(1/N) Σ_n Σ_k y[n,k]·log softmax(z)[n,k]; a [T, N, K] input is averaged over T first."""
    z = tensor(logits)
    if z.ndim == 3:
        z = F.mean(z, axis=0)
    if z.ndim != 2:
        raise ValueError(f"logits must be [N, K] or [T, N, K], got {z.shape}")
    y = _targets(labels, *z.shape, z.dtype)
    return -F.sum(F.log_softmax(z, axis=-1) * y) / z.shape[0]


def tet_loss(logits, labels, lamb=0.0, phi=1.0):
    """TET (Deng et al. 2022): L = (1 − λ)·(1/T) Σ_t CE(z[t], y) + λ·(1/T) Σ_t MSE(z[t], φ); λ = 0 by default, the
    per-step CE that EventRPG trains with."""
    z = tensor(logits)
    if z.ndim != 3:
        raise ValueError(f"tet_loss: logits must be [T, N, K], got {z.shape}")
    T, N, K = z.shape
    y = _targets(labels, N, K, z.dtype)
    ce = -F.sum(F.log_softmax(z, axis=-1) * y) / (T * N)
    return ce if lamb == 0 else (1 - lamb) * ce + lamb * F.mean((z - phi) ** 2)


def mse_rate(spikes, labels, on=1.0, off=0.0):
    """spikingjelly's classic loss: MSE between the output firing rate (mean over T) and a coded one-hot."""
    r = F.mean(tensor(spikes), axis=0)
    y = _targets(labels, *r.shape, r.dtype) * (on - off) + off
    return F.mean((r - y) ** 2)


def _log_mean_probs(z, tau):
    """log p of eq. 10 (:func:`kd_loss`) for [T, N, K] by a stable log-mean-exp over t; log softmax(z/τ) for [N, K]."""
    ls = F.log_softmax(z / tau, axis=-1)
    return ls if z.ndim == 2 else F.log(F.mean(F.exp(ls - ls.data.max(0)), axis=0)) + ls.data.max(0)


def kd_loss(student_logits, teacher_logits, tau=4.0):
    """Hinton's KD (HSD eq. 9): τ²·(1/N) Σ_n KL(p_t ‖ p_s); a [T, N, K] input is reduced over T by eq. 10,
    p = (1/T) Σ_t softmax(z_t/τ) — probabilities, not logits, are averaged. No gradient flows into the teacher."""
    zs = tensor(student_logits)
    zt = tensor(np.asarray(getattr(teacher_logits, "data", teacher_logits), dtype=zs.dtype))
    if zs.ndim not in (2, 3) or zt.ndim not in (2, 3) or zs.shape[-2:] != zt.shape[-2:] or not tau > 0:
        raise ValueError(f"kd_loss: student_logits {zs.shape} and teacher_logits {zt.shape} must be [(T,) N, K] with "
                         f"the same N and K, and tau > 0 (got {tau})")
    log_p_t = _log_mean_probs(zt, tau).data
    return F.sum(np.exp(log_p_t) * (log_p_t - _log_mean_probs(zs, tau))) * (tau * tau / zs.shape[-2])
