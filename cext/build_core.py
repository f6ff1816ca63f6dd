"""cffi (API mode) build script for minisnn's C core: ``python cext/build_core.py`` builds it in place."""
import os
import re

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "minisnn_core.h")) as f:
    header = f.read()

ffibuilder = FFI()
# cdef cannot take comments or enum initialisers it cannot parse; keep declarations only
ffibuilder.cdef(re.sub(r"/\*.*?\*/", "", header, flags=re.S))
ffibuilder.set_source(
    "minisnn._core",
    '#include "minisnn_core.h"',
    sources=[os.path.relpath(os.path.join(HERE, "minisnn_core.c"))],
    include_dirs=[os.path.relpath(HERE)],
    extra_compile_args=["-O3", "-fno-math-errno", "-ffp-contract=off"],
)

if __name__ == "__main__":
    os.chdir(os.path.dirname(HERE))
    ffibuilder.compile(verbose=True)
