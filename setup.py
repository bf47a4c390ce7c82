# Only here because setuptools reads cffi_modules from setup(); everything else is in pyproject.toml.
# Both modules are cffi "out-of-line ABI mode": the C declarations are parsed at build time,
# so importing them costs no pycparser run on the `pyctr run` start path and needs no C compiler.
from setuptools import setup

setup(cffi_modules=[
    "frontend/pyctr/_libc_build.py:ffibuilder",
    "helper/pyctr_helper/_libc_build.py:ffibuilder",
])
