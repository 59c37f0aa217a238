"""Builds the compiled twin of ``leadtrail.storage.wireform``; every other piece of the
distribution's metadata is in pyproject.toml.

The extension is optional: where it cannot be built (no C compiler or no Python headers),
the install goes on with the pure-Python twin, ``leadtrail.storage._wireform_py``, and says
so in one line (shown by ``pip install -v``).
"""

from __future__ import annotations

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

WIREFORM = Extension(
    "leadtrail.storage._wireform",
    sources=["storage/leadtrail/storage/_wireform.c"],
    optional=True,
)
FALLBACK = "leadtrail: {} was not built ({}): the pure-Python twin is used"


class OptionalBuildExt(build_ext):
    """``build_ext`` that never fails the install: a build error leaves the pure-Python twin."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as e:  # no compiler at all (setuptools raises before compiling anything)
            print(FALLBACK.format(WIREFORM.name, type(e).__name__), file=sys.stderr)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as e:  # the compiler or the headers are missing, or it does not compile
            print(FALLBACK.format(ext.name, type(e).__name__), file=sys.stderr)


setup(ext_modules=[WIREFORM], cmdclass={"build_ext": OptionalBuildExt})
