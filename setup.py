"""Build the optional C fast lane; everything else is declared in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        # optional: without a C compiler the pure-Python path does all the work
        Extension("unpack.layer._fastlane", ["unpack/layer/_fastlane.c"], optional=True)
    ]
)
