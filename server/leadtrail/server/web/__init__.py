"""The HTTP listener of ``leadtrail serve --http``: ``/metrics`` (and the console pages),
on the gRPC server's own event loop.

``meters`` measures (appends, their latency, subscriptions) per account, ``metrics``
turns that into Prometheus families at scrape time, ``auth`` admits a request by API
key, ``http`` is the aiohttp application, ``console`` the web console's pages.
"""

from .http import HttpListener, HttpListenerError
from .meters import Meters, meters_of

__all__ = ["HttpListener", "HttpListenerError", "Meters", "meters_of"]
