"""Small reference architectures (all ``nn.Sequential``, so relevance propagation can walk them).

Every model maps time-first frames [T, N, P, H, W] to per-step logits [T, N, K].
``neuron`` is a factory ``neuron(channels) -> Module``; ``gate`` (optional) is a factory
``gate(channels, index) -> Module or None`` inserted right before a block's neuron (ASA, Razor).
"""
import numpy as np

from . import neurons
from .nn import AvgPool2d, BatchNorm2d, Conv2d, Flatten, Linear, Sequential


def lif(channels=None):
    """The default neuron: spikingjelly's LIF, τ = 2, v_th = 1, hard reset to 0, Sigmoid(4) surrogate."""
    return neurons.LIF(tau=2.0)


def ta_lif(channels=None):
    """TA-SNN / ASA-SNN's LIF: u = 0.3·h + x, v_th = 0.3, hard reset, rectangular surrogate of width 0.5."""
    return neurons.LIF(decay=0.3, gain=1.0, v_threshold=0.3, surrogate=neurons.Rectangle(0.5))


def _block(layers, cin, cout, neuron, gate, index, rng, pool=True):
    layers += [Conv2d(cin, cout, 3, padding=1, bias=False, rng=rng), BatchNorm2d(cout)]
    if pool:
        layers.append(AvgPool2d(2))
    g = gate(cout, index) if gate is not None else None
    if g is not None:
        layers.append(g)
    layers.append(neuron(cout))


class _FramesToLogits(Sequential):
    """A Sequential whose input must be time-first frames [T, N, P, H, W] (a 4-D batch would use N as time)."""

    def forward(self, x):
        c = self[0].in_channels
        if x.ndim != 5 or x.shape[2] != c:
            raise ValueError(f"{type(self).__name__}: input must be time-first [T, N, P, H, W] with P = {c}, "
                             f"got shape {x.shape}")
        return super().forward(x)


class ConvSNN(_FramesToLogits):
    """The benchmark net: conv 2→16 3×3 pad 1, BN, LIF, avgpool 2, conv 16→32, BN, LIF, avgpool 2, flatten,
    linear → classes. Input [T, N, 2, 34, 34] (any H, W works: the linear layer is sized from them)."""

    def __init__(self, n_classes=10, in_channels=2, input_size=34, width=16, neuron=lif, rng=None):
        rng, s = rng or np.random.default_rng(0), (input_size // 2) // 2
        super().__init__(Conv2d(in_channels, width, 3, padding=1, rng=rng), BatchNorm2d(width), neuron(width),
                         AvgPool2d(2), Conv2d(width, 2 * width, 3, padding=1, rng=rng), BatchNorm2d(2 * width),
                         neuron(2 * width), AvgPool2d(2), Flatten(), Linear(2 * width * s * s, n_classes, rng=rng))


class TASNN(_FramesToLogits):
    """The three-layer net of TA-SNN / ASA-SNN / Razor SNN: three blocks conv3×3 → BN → avgpool 2 → [gate] →
    LIF with 64, 128, 128 channels (× ``width``), then FC 256 → LIF → FC classes."""

    def __init__(self, n_classes=10, in_channels=2, input_size=34, width=1.0, fc=256, neuron=ta_lif, gate=None,
                 rng=None):
        rng = rng or np.random.default_rng(0)
        chans = [max(1, int(round(c * width))) for c in (64, 128, 128)]
        layers, cin, size = [], in_channels, input_size
        for i, c in enumerate(chans):
            _block(layers, cin, c, neuron, gate, i, rng)
            cin, size = c, size // 2
        hidden = max(1, int(round(fc * width)))
        layers += [Flatten(), Linear(cin * size * size, hidden, rng=rng), neuron(hidden), Linear(hidden, n_classes, rng=rng)]
        super().__init__(*layers)


class VGGSNN(_FramesToLogits):
    """A width-configurable small VGG-SNN: ``cfg`` lists conv widths and 'P' (avgpool 2); conv → BN → neuron."""

    def __init__(self, n_classes=10, in_channels=2, input_size=34, cfg=(16, 32, "P", 32, 64, "P", 64, "P"),
                 neuron=lif, gate=None, rng=None):
        rng = rng or np.random.default_rng(0)
        layers, cin, size = [], in_channels, input_size
        for i, c in enumerate(cfg):
            if c == "P":
                layers.append(AvgPool2d(2))
                size //= 2
                continue
            _block(layers, cin, c, neuron, gate, i, rng, pool=False)
            cin = c
        layers += [Flatten(), Linear(cin * size * size, n_classes, rng=rng)]
        super().__init__(*layers)
