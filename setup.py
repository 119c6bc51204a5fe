"""Build hook for the Cython extension(s); metadata lives in pyproject.toml."""

import os

from setuptools import Extension, setup

try:
    import numpy
    from Cython.Build import cythonize
except ImportError as e:  # pragma: no cover
    raise SystemExit("lunabase needs Cython and numpy to build its parser: pip install cython numpy") from e

extensions = [
    Extension(
        "ground.parse._parse_c",
        ["ground/parse/_parse_c.pyx"],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        # -ffp-contract=off: raw * scale + add must round exactly like the pure twin's
        # float64 arithmetic (no fused multiply-add)
        extra_compile_args=["-O3", "-ffp-contract=off"],
    ),
]

setup(
    ext_modules=cythonize(
        [e for e in extensions if os.path.exists(e.sources[0])],
        compiler_directives={"language_level": "3"},
        quiet=True,
    )
)
