"""``serve --sink-files-root DIR``: files sinks may then be given absolute directories under
DIR (and only there); without it only paths under ``<data>/sink-files/<account>/``. A root
that is not an absolute directory stops the server with one line."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from leadtrail.v1 import sinks_pb2, sinks_pb2_grpc

from .conftest import ServerProcess

server_process = sys.modules["server_process"]  # loaded by tests/conftest.py


def files_sink(name: str, directory: str) -> sinks_pb2.Sink:
    return sinks_pb2.Sink(name=name, files=sinks_pb2.FilesTarget(directory=directory))


def test_absolute_directories_only_under_the_roots_given(
    spawn: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    lake, elsewhere = tmp_path / "lake", tmp_path / "elsewhere"
    lake.mkdir()
    elsewhere.mkdir()
    process = spawn(tmp_path / "data", "--http", "off", "--sink-files-root", str(lake))
    channel = grpc.insecure_channel(process.address)
    sinks = sinks_pb2_grpc.SinkServiceStub(channel)
    stored = sinks.SetSink(files_sink("lake", f"{lake}/acme/events/"), timeout=10)
    assert stored.files.directory == f"{lake}/acme/events"
    assert sinks.SetSink(files_sink("own", "relative/dir"), timeout=10).files.directory == "relative/dir"
    for directory in (str(elsewhere / "x"), str(lake), f"{lake}/../elsewhere"):
        with pytest.raises(grpc.RpcError) as info:
            sinks.SetSink(files_sink("outside", directory), timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (info.value.details() or "").startswith("files.directory: "), info.value.details()
    assert [s.name for s in sinks.ListSinks(sinks_pb2.ListSinksRequest(), timeout=10).sinks] == [
        "lake",
        "own",
    ]
    channel.close()
    assert process.stop() == 0


def test_a_root_that_is_not_a_directory_stops_the_server(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")
    data = str(tmp_path / "data")
    command = [*server_process.LEADTRAIL, "serve", "--data", data, "--listen", "127.0.0.1:0", "--http", "off"]
    child = server_process.Child([*command, "--sink-files-root", missing])
    try:
        assert child.wait(60) != 0
    finally:
        child.close()
    last = child.stderr.text.strip().splitlines()[-1]
    assert last == f"leadtrail: --sink-files-root {missing!r}: not an absolute path of a directory"
    assert "Traceback" not in child.stderr.text and "serving on" not in child.stdout.text
