"""Relevance propagation (EventRPG §2–3, appendix D): αβ rule, SLTRP, SLRP, maps and faithfulness."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minisnn import models, neurons, nn, relevance as rv

SETTINGS = settings(max_examples=25, deadline=None)


def no_bias_f64(model):
    """Drop biases (conservation is exact only without them) and move every parameter to float64."""
    for _, layer in rv.layers_of(model):
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            layer.bias = None
        for name in list(layer._params) + list(layer._buffers):
            v = getattr(layer, name)
            if hasattr(v, "data") and not isinstance(v, np.ndarray):
                v.data = v.data.astype(np.float64)
            else:
                setattr(layer, name, np.asarray(v, np.float64))
    return model


def test_explain_conserves_on_convsnn():
    rng = np.random.default_rng(0)
    m = no_bias_f64(models.ConvSNN(rng=rng, input_size=16, width=4))
    for _, l in rv.layers_of(m):
        if isinstance(l, (nn.Conv2d, nn.Linear)):
            l.weight.data *= 4
    x = (rng.random((5, 3, 2, 16, 16)) < 0.3) * 2.0
    for mode in rv.MODES:
        e = rv.explain(m, x, init="logit", mode=mode)
        assert e.input.shape == ((5,) if mode == "sltrp" else ()) + (3, 2, 16, 16)
        for name, r in e.residuals().items():
            np.testing.assert_allclose(r, 0, atol=1e-9, err_msg=name)
        total = e.output_relevance.sum() / (5 if mode == "slrp" else 1)
        lost = sum(c["lost"].sum() + c["init"].sum() for k, c in e.conservation.items() if k != "output")
        assert abs(e.input.sum() + lost - total) < 1e-9
