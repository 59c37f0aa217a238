"""The ``leadtrail.v1`` protobuf package: LeadTrail's wire contract.

Generated from ``proto/leadtrail/v1/*.proto`` by ``python proto/generate.py``;
import the module you need, e.g. ``from leadtrail.v1 import event_pb2,
submission_pb2_grpc``. Nothing is imported here, so importing the package stays
cheap and pulls in neither protobuf nor grpc.

=========================  =====================================================
module                     contents
=========================  =====================================================
``event_pb2``              ``Event``, ``Outcome``, ``EventFilter``
``submission_pb2``         ``AppendRequest``, ``AppendResponse``, ``AppendResult``
``query_pb2``              ``GetEventRequest``, ``Timeline``, ``QueryEventsRequest``,
                           ``ExportRequest``, ``AggregateRequest``, ...
``stream_pb2``             ``SubscribeRequest``, ``SubscribeResponse``,
                           ``Checkpoint``, ``CaughtUp``
``admin_pb2``              ``Stats``, ``RetentionPolicy``, ``VerifyReport``, ...
``*_pb2_grpc``             service stubs, servicers and ``add_*_to_server``
=========================  =====================================================
"""

__all__: list[str] = []
