"""Regenerate the Python code of the ``leadtrail.v1`` protobuf package.

    python proto/generate.py          # rewrite the committed *_pb2* files
    python proto/generate.py --check  # exit 1 when they differ from a fresh run

The generated modules (``*_pb2.py``, ``*_pb2_grpc.py``) and their ``.pyi`` stubs
are written beside the ``.proto`` files under ``proto/leadtrail/v1/`` and are
committed, so users never need protoc. ``--check`` regenerates into a temporary
directory and compares byte for byte; CI runs it to catch a ``.proto`` edited
without regenerating (or generated files edited by hand).

Output depends only on the ``.proto`` files and the versions of grpcio-tools and
mypy-protobuf: the inputs are passed in sorted order and nothing else (time,
paths, environment) reaches the generated text.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
PACKAGE_DIR = PROTO_ROOT / "leadtrail" / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def proto_sources() -> list[str]:
    """The ``.proto`` files as protoc names them: relative to ``proto/``, sorted."""
    return sorted(path.relative_to(PROTO_ROOT).as_posix() for path in PACKAGE_DIR.glob("*.proto"))


def find_plugin(name: str) -> str:
    # The plugins are console scripts of the environment running this script;
    # look beside its interpreter first so an unactivated venv works too.
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        sys.exit(f"generate: {name} not found (install mypy-protobuf in this environment)")
    return found


def generate(out_root: Path) -> None:
    """Run protoc on every ``.proto`` file, writing under ``out_root/leadtrail/v1``."""
    # Imported late so ``--help`` works without grpcio-tools (which ships no type hints).
    from grpc_tools import protoc  # type: ignore[import-untyped]

    well_known = resources.files("grpc_tools") / "_proto"
    out = str(out_root)
    args = [
        "grpc_tools.protoc",
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={well_known}",
        f"--plugin=protoc-gen-mypy={find_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={find_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out=quiet:{out}",
        f"--mypy_grpc_out=quiet:{out}",
        *proto_sources(),
    ]
    status = protoc.main(args)
    if status != 0:
        sys.exit(f"generate: protoc failed with status {status}")


def generated_files(package_dir: Path) -> set[str]:
    return {
        path.name
        for path in package_dir.iterdir()
        if path.is_file() and path.name.endswith(GENERATED_SUFFIXES)
    }


def drift(fresh_dir: Path, committed_dir: Path) -> list[str]:
    """Names of generated files that are missing, stale or different in ``committed_dir``."""
    fresh = generated_files(fresh_dir)
    committed = generated_files(committed_dir)
    differing = [
        name
        for name in fresh & committed
        if not filecmp.cmp(fresh_dir / name, committed_dir / name, shallow=False)
    ]
    return sorted([*differing, *(fresh ^ committed)])


def report_drift(fresh_dir: Path) -> int:
    stale = drift(fresh_dir, PACKAGE_DIR)
    if not stale:
        return 0
    print("generated code is out of date; run `python proto/generate.py`:", file=sys.stderr)
    for name in stale:
        print(f"  {(PACKAGE_DIR / name).relative_to(PROTO_ROOT.parent)}", file=sys.stderr)
    return 1


def install(fresh_dir: Path) -> None:
    # Replace the whole generated set so the files of a deleted .proto disappear.
    for name in generated_files(PACKAGE_DIR):
        (PACKAGE_DIR / name).unlink()
    for name in sorted(generated_files(fresh_dir)):
        shutil.copyfile(fresh_dir / name, PACKAGE_DIR / name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="regenerate into a temporary directory and exit 1 if the committed files differ",
    )
    options = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="leadtrail-proto-") as tmp:
        fresh_dir = Path(tmp) / "leadtrail" / "v1"
        fresh_dir.mkdir(parents=True)
        generate(Path(tmp))
        if options.check:
            return report_drift(fresh_dir)
        install(fresh_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
