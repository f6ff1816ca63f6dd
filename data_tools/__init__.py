"""Event data for minisnn: formats (io), events, frames, augmentation, simulation, datasets, loader.

Importing the package is cheap: scikit-learn is imported only when DigitsDVS converts the digits.
"""
from . import augment, datasets, events, frames, io, loader, simulate

__all__ = ["augment", "datasets", "events", "frames", "io", "loader", "simulate"]
