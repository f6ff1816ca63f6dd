"""cffi (API mode) build script for minisnn's C core: ``python cext/build_core.py`` builds it in place."""
import os
import re

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "minisnn_core.h")) as f:
    header = f.read()

# -march=native: the extension is compiled on the machine that runs it (pip install builds it), so it
# may use that CPU's vector width; -fopenmp runs neuron blocks on all cores. Both are optional:
# setup.py retries without them if the compiler refuses; MINISNN_PORTABLE=1 builds without them.
OPTIONAL_FLAGS = ("-march=native", "-fopenmp")
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
    extra_link_args=[f for f in OPTIONAL_FLAGS_USED if f == "-fopenmp"],
)

if __name__ == "__main__":
    os.chdir(os.path.dirname(HERE))
    ffibuilder.compile(verbose=True)
