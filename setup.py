"""Build hook for the C selector extension (everything else lives in pyproject.toml)."""
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "rserpool._selector",
            sources=["rserpool/_selector.c"],
            extra_compile_args=["-O2", "-std=c11"],
            optional=False,
        )
    ]
)
