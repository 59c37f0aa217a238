"""Durable consumers: named readers of the committed log that survive restarts.

Alert evaluation, webhook deliveries, sinks and scheduled exports are all the same
thing (DESIGN.md, "Durable consumers"): a reader with a stored position that follows
committed events in position order, does its work on each batch, and advances its
position only after that work is done. A restart resumes from the stored position,
so every event is handed to the consumer at least once; what a handler does twice
after a crash (between its work and the next save of the position) it must
recognise itself (see ``Handler``).
"""

from .consumer import DurableConsumer, Handler
from .position import ConsumerPosition, PositionFileError, Saved

__all__ = ["ConsumerPosition", "DurableConsumer", "Handler", "PositionFileError", "Saved"]
