"""minisnn: a small, readable spiking-neural-network library for event-camera data (NumPy + a C core)."""
from . import functional  # noqa: F401  (attaches the operators to Tensor)
from . import analysis, core, losses, models, nn, neurons, optim, relevance, train
from .autograd import Tensor, enable_grad, is_grad_enabled, no_grad

__version__ = "0.1.0"
__all__ = ["Tensor", "no_grad", "enable_grad", "is_grad_enabled", "core", "nn", "neurons", "functional", "losses",
           "optim", "train", "models", "relevance", "analysis"]
