"""Build hook for the Cython extension(s); metadata lives in pyproject.toml."""

from setuptools import Extension, setup

try:
    from Cython.Build import cythonize
except ImportError as e:  # pragma: no cover
    raise SystemExit("lunabase needs Cython to build its parser: pip install cython") from e

extensions = [
    Extension(
        "ground.parse._parse_c",
        ["ground/parse/_parse_c.pyx"],
        extra_compile_args=["-O3"],
    ),
]

setup(
    ext_modules=cythonize(
        [e for e in extensions if __import__("os").path.exists(e.sources[0])],
        compiler_directives={"language_level": "3"},
        quiet=True,
    )
)
