"""Training and evaluation loops: one progress line per epoch, seeded, with atomic checkpoints.

Model selection is on a **validation** split carved from the training data
(``data_tools.datasets.validation_split``): :func:`fit` never sees the test set. With a ``val_loader`` the
model ends up holding the weights of the epoch with the best validation accuracy (``keep="best"``, the
default) or of the last epoch (``keep="last"``); without one, the last epoch's.

Failing loudly: a batch that is not time-first ``[T, N, ...]`` with ``N = len(labels)``, or that holds NaN/inf,
raises ValueError; a non-finite loss, gradient or parameter, or a loss above ``100·max(1, |first loss|)``
(a run that diverges), raises FloatingPointError naming the epoch, batch and parameter.
"""
import time

import numpy as np

from . import losses, optim
from .autograd import Tensor, no_grad
from .neurons import BaseNeuron

DIVERGED = 100.0   # a loss above DIVERGED · max(1, |first batch's loss|) stops training


def spike_rate(model):
    """Network firing rate of the last eval pass: Σ_l rate_l·n_l / Σ_l n_l over neuron layers (NASFR)."""
    layers = [m for m in model.modules() if isinstance(m, BaseNeuron) and getattr(m, "spike_rate", None) is not None]
    n = sum(m.n_neurons for m in layers)
    return sum(m.spike_rate * m.n_neurons for m in layers) / n if n else float("nan")


def check_batch(x, y, where):
    """A time-first batch ``[T, N, ...]`` with ``N = len(y) > 0`` and finite values, else ValueError."""
    x, n = np.asarray(x), len(y)
    if n == 0:
        raise ValueError(f"{where}: empty batch (0 labels)")
    if x.ndim < 3 or x.shape[1] != n:
        raise ValueError(f"{where}: frames must be time-first [T, N, ...] (images: [T, N, P, H, W]) with N = "
                         f"len(labels) = {n}, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{where}: the frames hold NaN or inf")
    return x


def _accuracy(logits, labels):
    pred = logits.mean(0).argmax(-1) if logits.ndim == 3 else logits.argmax(-1)
    labels = np.asarray(labels)
    return float(np.mean(pred == (labels.argmax(-1) if labels.ndim == 2 else labels)))


def evaluate(model, loader, loss_fn=losses.cross_entropy):
    """Mean loss, accuracy (arg-max of the time-mean logits) and firing rate over a loader, in eval mode."""
    was_training = model.training
    model.eval()
    tot_loss = tot_acc = tot_rate = 0.0
    n = 0
    with no_grad():
        for b, (x, y) in enumerate(loader):
            out = model(Tensor(check_batch(x, y, f"evaluate, batch {b}")))
            k = len(y)
            tot_loss += float(loss_fn(out, y).data) * k
            tot_acc += _accuracy(out.data, y) * k
            tot_rate += spike_rate(model) * k
            n += k
    model.train(was_training)
    if n == 0:
        raise ValueError("evaluate: the loader yielded no samples")
    return {"loss": tot_loss / n, "accuracy": tot_acc / n, "spike_rate": tot_rate / n}


def _check_finite(model, what, where):
    for name, p in model.named_parameters():
        a = p.data if what == "parameter" else p.grad
        if a is not None and not np.isfinite(a).all():
            raise FloatingPointError(f"{where}: {what} {name!r} is NaN or inf (lower the learning rate?)")


def train_epoch(model, loader, optimizer, loss_fn=losses.cross_entropy, step_hook=None, epoch=1, first_loss=None):
    """One pass over ``loader``: forward, loss, backward, optimiser step. Returns mean loss and accuracy."""
    model.train()
    tot_loss = tot_acc = 0.0
    n = 0
    for b, (x, y) in enumerate(loader):
        where = f"epoch {epoch}, batch {b}"
        out = model(Tensor(check_batch(x, y, where)))
        loss = loss_fn(out, y)
        value = float(loss.data)
        first_loss = value if first_loss is None else first_loss
        if not np.isfinite(value) or value > DIVERGED * max(1.0, abs(first_loss)):
            raise FloatingPointError(f"{where}: training diverged (loss {value:.4g}, first loss {first_loss:.4g})")
        optimizer.zero_grad()
        loss.backward()
        if step_hook is not None:
            step_hook(model)
        _check_finite(model, "gradient", where)
        optimizer.step()
        _check_finite(model, "parameter", where)
        tot_loss += value * len(y)
        tot_acc += _accuracy(out.data, y) * len(y)
        n += len(y)
    if n == 0:
        raise ValueError("train_epoch: the training loader yielded no samples")
    return {"loss": tot_loss / n, "accuracy": tot_acc / n, "first_loss": first_loss}


def fit(model, train_loader, val_loader=None, epochs=10, lr=1e-3, optimizer=None, loss_fn=losses.cross_entropy,
        cosine=True, checkpoint=None, keep=None, log=print, step_hook=None):
    """Train for ``epochs``, one progress line per epoch; select the weights on ``val_loader`` (never the test set).

    ``train_loader`` yields (frames [T, N, ...], labels) with labels as class indices or soft [N, K] rows
    (mixed-sample augmentation). ``keep``: "best" (default with a ``val_loader``: the epoch of the highest
    validation accuracy, the earliest on ties) or "last". The kept weights are loaded into ``model`` at the end
    and, with ``checkpoint``, saved there. Returns the history: one dict per epoch, the kept one with "kept": True.
    """
    keep = keep or ("best" if val_loader is not None else "last")
    if keep not in ("best", "last") or (keep == "best" and val_loader is None):
        raise ValueError(f"keep must be 'best' (needs a val_loader) or 'last', got {keep!r}")
    if int(epochs) != epochs or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, got {epochs}")
    optimizer = optimizer or optim.Adam(model.parameters(), lr=lr)
    sched = optim.CosineAnnealing(optimizer, epochs) if cosine else None
    history, best, best_state, first, t0 = [], -1.0, None, None, time.perf_counter()
    for epoch in range(1, epochs + 1):
        e0 = time.perf_counter()
        stats = train_epoch(model, train_loader, optimizer, loss_fn, step_hook, epoch, first)
        first = stats.pop("first_loss")
        row = {"epoch": epoch, **{f"train_{k}": v for k, v in stats.items()}}
        if val_loader is not None:
            row.update({f"val_{k}": v for k, v in evaluate(model, val_loader, loss_fn).items()})
        row["seconds"] = time.perf_counter() - e0
        history.append(row)
        if sched:
            sched.step()
        if keep == "best" and row["val_accuracy"] > best:
            best, best_state = row["val_accuracy"], (epoch, model.state_dict())
        if log:
            eta = (time.perf_counter() - t0) / epoch * (epochs - epoch)
            rate = row.get("val_spike_rate", float("nan"))
            val = (f" | val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.2%}"
                   + (f" spike rate {rate:.3f}" if np.isfinite(rate) else "")) if val_loader is not None else ""
            log(f"epoch {epoch}/{epochs} | train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.2%}{val}"
                f" | {row['seconds']:.1f}s, ETA {eta:.0f}s")
    kept = best_state[0] if keep == "best" else epochs
    if keep == "best":
        model.load_state_dict(best_state[1])
    history[kept - 1]["kept"] = True
    if checkpoint is not None:
        model.save(checkpoint)
    if log and val_loader is not None:
        log(f"kept epoch {kept} ({keep}: validation accuracy {history[kept - 1]['val_accuracy']:.2%})")
    return history
