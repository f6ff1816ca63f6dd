"""Build and install minisnn. The C core (cext/) is compiled through cffi's API mode; if that fails
(no C compiler), the install still succeeds and minisnn falls back to its NumPy kernels with a warning."""
import sys

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext

sys.path.insert(0, "cext")
from build_core import OPTIONAL_FLAGS, ffibuilder  # noqa: E402


class OptionalBuildExt(build_ext):
    """Build the C core if possible; otherwise warn and carry on (NumPy reference kernels are used)."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # distutils/setuptools raise several error types for a missing compiler
            self._warn(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception:  # retry without the optional flags (a compiler without -march=native)
            ext.extra_compile_args = [f for f in ext.extra_compile_args if f not in OPTIONAL_FLAGS]
            ext.extra_link_args = [f for f in ext.extra_link_args if f not in OPTIONAL_FLAGS]
            try:
                super().build_extension(ext)
            except Exception as exc:
                self._warn(exc)

    @staticmethod
    def _warn(exc):
        print(f"WARNING: minisnn's C core could not be built ({exc}); the NumPy kernels will be used.",
              file=sys.stderr)


extras = {
    "test": ["pytest>=7", "hypothesis>=6"],
    "tutorials": ["matplotlib>=3.5", "nbclient>=0.7", "nbformat>=5", "ipykernel>=6"],
    "data": ["scikit-learn>=1.0", "lz4>=3"],   # lz4: real AEDAT 4 recordings from DV are LZ4-compressed
    # minisnn.nir: export to / import from spikingjelly, snntorch, norse, ... (nir 1.0.8 needs Python >= 3.10)
    "nir": ["nir>=1.0; python_version >= '3.10'", "h5py>=3"],
}
extras["all"] = sorted({d for v in extras.values() for d in v})

setup(
    name="minisnn",
    version="0.1.0",
    description="A small, readable spiking neural network library for event-camera data (NumPy + a C core)",
    packages=find_packages(include=["minisnn", "minisnn.*", "data_tools", "data_tools.*"]),
    python_requires=">=3.9",
    # threadpoolctl: minisnn runs its own threads and keeps BLAS single-threaded inside them; two layers of
    # threads on the same cores made a ConvSNN step 1.7x slower (minisnn/core.py, chunked)
    install_requires=["numpy>=1.22", "scipy>=1.8", "cffi>=1.15", "threadpoolctl>=3"],
    extras_require=extras,
    ext_modules=[ffibuilder.distutils_extension()],
    cmdclass={"build_ext": OptionalBuildExt},
    zip_safe=False,
)
