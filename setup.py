"""Build hook for the Cython extensions; metadata lives in pyproject.toml.

The parser's C (ground/parse/lb_*.h) compiles each hot path once per instruction-set
level under that level's own target and picks the level at run time from the CPU, so
no -march flag is needed (or wanted: a wheel must run on other machines).  Flags given
through CFLAGS still apply; `lunabase bench parse` reports them.
"""

import os
import sysconfig

from setuptools import Extension, setup

try:
    import numpy
    from Cython.Build import cythonize
except ImportError as e:  # pragma: no cover
    raise SystemExit("lunabase needs Cython and numpy to build its parser: pip install cython numpy") from e

PARSE_HEADERS = ["ground/parse/lb_parse.h", "ground/parse/lb_level.h", "ground/parse/lb_crcscan.h"]
# -ffp-contract=off: raw * scale + add must round exactly like the pure twin's float64
# arithmetic (no fused multiply-add)
ARGS = ["-O3", "-ffp-contract=off"]


def _build_flags() -> str:
    """The flags the parser is compiled with (Python's own, CFLAGS, ours), for the report."""
    parts = [sysconfig.get_config_var("CFLAGS") or "", os.environ.get("CFLAGS", ""), " ".join(ARGS)]
    return " ".join(p for p in parts if p).replace('"', "'")


common = dict(
    include_dirs=[numpy.get_include(), "ground/parse"],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"), ("LB_BUILD_FLAGS", f'"{_build_flags()}"')],
    extra_compile_args=ARGS,
    depends=PARSE_HEADERS,
)
extensions = [
    Extension("ground.parse._parse_c", ["ground/parse/_parse_c.pyx"], **common),
    # the benchmark's CRC-only pass, out of the production extension
    Extension("ground.parse._bench_c", ["ground/parse/_bench_c.pyx"], **common),
]

setup(
    ext_modules=cythonize(
        [e for e in extensions if os.path.exists(e.sources[0])],
        compiler_directives={"language_level": "3"},
        quiet=True,
    )
)
