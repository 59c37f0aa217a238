"""Aggregate does not page: an answer with more groups than fit under gRPC's 4 MB default
is refused with a status naming the problem, never sent for the client to reject."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from leadtrail.server.aggregates import aggregate
from leadtrail.server.status import ServiceError
from leadtrail.storage import Event, EventFilter, EventLog
from leadtrail.v1 import query_pb2


def test_groups_that_would_not_fit_an_answer_are_resource_exhausted(tmp_path: Path) -> None:
    with EventLog.open(tmp_path / "data") as log:
        log.append(
            [Event("source.submitted", f"lead-{i}", "flow", entity_id=f"entity-{i}") for i in range(200)]
        )
        by_entity = [query_pb2.GROUP_BY_ENTITY]
        assert len(aggregate(log, EventFilter(), by_entity).rows) == 200
        with pytest.raises(ServiceError) as refused:
            aggregate(log, EventFilter(), by_entity, max_bytes=1000)
        assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "200 groups" in str(refused.value)
        assert len(aggregate(log, EventFilter(), [query_pb2.GROUP_BY_TYPE], max_bytes=1000).rows) == 1
