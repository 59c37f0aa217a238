"""The HTTP listener of ``leadtrail serve --http``: ``/metrics`` (and the console pages),
on the gRPC server's own event loop."""

from .http import HttpListener

__all__ = ["HttpListener"]
