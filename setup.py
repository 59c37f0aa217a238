"""Builds the compiled twins of ``leadtrail.storage.wireform`` and ``leadtrail.storage.ingest``;
every other piece of the distribution's metadata is in pyproject.toml.

The extensions are optional: where one cannot be built (no C compiler or no Python headers),
the install goes on with the pure-Python twins (``_wireform_py``, ``_ingest_py``), and says
so in one line each (shown by ``pip install -v``).
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
INGEST = Extension(
    "leadtrail.storage._ingest",
    sources=["storage/leadtrail/storage/_ingest.c"],
    optional=True,
)
FALLBACK = "leadtrail: {} was not built ({}): the pure-Python twin is used"


class OptionalBuildExt(build_ext):
    """``build_ext`` that never fails the install: a build error leaves the pure-Python twin."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as e:  # no compiler at all (setuptools raises before compiling anything)
            for ext in self.extensions:
                print(FALLBACK.format(ext.name, type(e).__name__), file=sys.stderr)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as e:  # the compiler or the headers are missing, or it does not compile
            print(FALLBACK.format(ext.name, type(e).__name__), file=sys.stderr)


setup(ext_modules=[WIREFORM, INGEST], cmdclass={"build_ext": OptionalBuildExt})
