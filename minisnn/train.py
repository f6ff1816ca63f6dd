"""Training and evaluation loops: one progress line per epoch, seeded, with atomic checkpoints."""
import time

import numpy as np

from . import losses, optim
from .autograd import Tensor, no_grad
from .neurons import BaseNeuron


def spike_rate(model):
    """Network firing rate of the last eval pass: Σ_l rate_l·n_l / Σ_l n_l over neuron layers (NASFR)."""
    layers = [m for m in model.modules() if isinstance(m, BaseNeuron) and getattr(m, "spike_rate", None) is not None]
    n = sum(m.n_neurons for m in layers)
    return sum(m.spike_rate * m.n_neurons for m in layers) / n if n else float("nan")


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
        for x, y in loader:
            out = model(Tensor(x))
            k = len(y)
            tot_loss += float(loss_fn(out, y).data) * k
            tot_acc += _accuracy(out.data, y) * k
            tot_rate += spike_rate(model) * k
            n += k
    model.train(was_training)
    if n == 0:
        raise ValueError("evaluate: the loader yielded no samples")
    return {"loss": tot_loss / n, "accuracy": tot_acc / n, "spike_rate": tot_rate / n}


def train_epoch(model, loader, optimizer, loss_fn=losses.cross_entropy, step_hook=None):
    """One pass over ``loader``: forward, loss, backward, optimiser step. Returns mean loss and accuracy."""
    model.train()
    tot_loss = tot_acc = 0.0
    n = 0
    for x, y in loader:
        out = model(Tensor(x))
        loss = loss_fn(out, y)
        if not np.isfinite(loss.data):
            raise FloatingPointError(f"training diverged: loss = {loss.data}")
        optimizer.zero_grad()
        loss.backward()
        if step_hook is not None:
            step_hook(model)
        optimizer.step()
        k = len(y)
        tot_loss += float(loss.data) * k
        tot_acc += _accuracy(out.data, y) * k
        n += k
    return {"loss": tot_loss / max(n, 1), "accuracy": tot_acc / max(n, 1)}


def fit(model, train_loader, test_loader=None, epochs=10, lr=1e-3, optimizer=None, loss_fn=losses.cross_entropy,
        cosine=True, checkpoint=None, log=print, step_hook=None):
    """Train for ``epochs``; print one line per epoch; keep the best test accuracy's weights at ``checkpoint``.

    ``train_loader`` yields (frames [T, N, ...], labels) with labels as class indices or soft [N, K]
    rows (mixed-sample augmentation). Returns the history: one dict per epoch.
    """
    optimizer = optimizer or optim.Adam(model.parameters(), lr=lr)
    sched = optim.CosineAnnealing(optimizer, epochs) if cosine else None
    history, best, t0 = [], -1.0, time.perf_counter()
    for epoch in range(1, epochs + 1):
        e0 = time.perf_counter()
        row = {"epoch": epoch, **{f"train_{k}": v for k, v in train_epoch(model, train_loader, optimizer, loss_fn,
                                                                           step_hook).items()}}
        if test_loader is not None:
            row.update({f"test_{k}": v for k, v in evaluate(model, test_loader, loss_fn).items()})
        row["seconds"] = time.perf_counter() - e0
        history.append(row)
        if sched:
            sched.step()
        acc = row.get("test_accuracy", row["train_accuracy"])
        if checkpoint is not None and acc > best:
            best = acc
            model.save(checkpoint)
        eta = (time.perf_counter() - t0) / epoch * (epochs - epoch)
        if log:
            rate = row.get("test_spike_rate", float("nan"))
            test = (f" | test loss {row['test_loss']:.4f} acc {row['test_accuracy']:.2%}"
                    + (f" spike rate {rate:.3f}" if np.isfinite(rate) else "")) if test_loader is not None else ""
            log(f"epoch {epoch}/{epochs} | train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.2%}{test}"
                f" | {row['seconds']:.1f}s, ETA {eta:.0f}s")
    return history
