"""cffi (API mode) build script for minisnn's C core: ``python cext/build_core.py`` builds it in place."""
import os
import re

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "minisnn_core.h")) as f:
    header = f.read()

# -march=native: the extension is compiled on the machine that runs it (pip install builds it), so it
# may use that CPU's vector width. Optional: setup.py retries without it if the compiler refuses;
# MINISNN_PORTABLE=1 builds without it. (No OpenMP: minisnn.core splits the neurons over its own threads.)
OPTIONAL_FLAGS = ("-march=native",)
OPTIONAL_FLAGS_USED = () if os.environ.get("MINISNN_PORTABLE") else OPTIONAL_FLAGS

ffibuilder = FFI()
# cdef cannot take comments or enum initialisers it cannot parse; keep declarations only
ffibuilder.cdef(re.sub(r"/\*.*?\*/", "", header, flags=re.S))
ffibuilder.set_source(
    "minisnn._core",
    '#include "minisnn_core.h"',
    sources=[os.path.relpath(os.path.join(HERE, "minisnn_core.c"))],
    include_dirs=[os.path.relpath(HERE)],
    depends=[os.path.relpath(os.path.join(HERE, f)) for f in ("kernels.inc", "minisnn_core.h")],
    # -fno-trapping-math lets comparisons vectorise; -ffp-contract=off keeps a*b + c unfused so that
    # float32 results match NumPy's bit for bit
    extra_compile_args=["-O3", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off", *OPTIONAL_FLAGS_USED],
)

if __name__ == "__main__":
    os.chdir(os.path.dirname(HERE))
    ffibuilder.compile(verbose=True)
