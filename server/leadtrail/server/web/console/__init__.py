"""The web console: search, a lead's timeline, the event inspector, the live view, reports
and alerts, served by ``leadtrail serve --http`` on the server's own loop.

``calls`` reads through the servicers' own code (same keys, roles, scopes, masking and read
audit as gRPC), ``sessions`` keeps console logins, ``pages`` renders the pages from
``templates/`` (autoescaped) with ``static/`` assets, ``live`` streams Server-Sent Events,
``reports`` builds the report tables and charts, ``search`` reads the search box,
``views`` turns answers into what a page shows and ``display`` spells values.
"""

from .calls import ConsoleServices
from .pages import Console

__all__ = ["Console", "ConsoleServices"]
