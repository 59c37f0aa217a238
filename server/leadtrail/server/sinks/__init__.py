"""Sinks: committed events handed on to other systems by durable consumers.

``target`` is the interface every kind of target implements (NATS JetStream, HTTP
webhook, files); a sink filters and masks committed events and hands them to its
target in position order, advancing its position only for what the target holds.
"""

from .model import FileFormat, FilesSpec, NatsSpec, SinkSpec, TargetKind, TargetSpec, WebhookSpec
from .registry import Sinks, SinkState
from .target import Target, TargetError

__all__ = [
    "FileFormat",
    "FilesSpec",
    "NatsSpec",
    "SinkSpec",
    "SinkState",
    "Sinks",
    "Target",
    "TargetError",
    "TargetKind",
    "TargetSpec",
    "WebhookSpec",
]
