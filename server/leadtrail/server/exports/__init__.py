"""Scheduled exports: jobs that write files of events inside the server."""

__all__: list[str] = []
