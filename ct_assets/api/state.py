"""What one API worker process holds: where accepted events go, the served models, and
the inference log.

With the embedded event store a worker owns one :class:`EventLogWriter` and one
:class:`GroupCommitter`: concurrent requests are committed together (one fsync per
file per group) and each is answered 202 only once its batch is durable. With an event
stream (``CT_EVENT_STORE=nats``) the worker holds no log: each batch is published, and
answered 202 only once the stream acknowledged every event of it
(:mod:`ct_assets.eventstream`); the inference log publishes there too.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from ct_assets.eventlog.committer import GroupCommitter, GroupStats
from ct_assets.eventlog.writer import AppendResult, EventLogWriter, PreparedBatch
from ct_assets.eventstream import EventStream
from ct_assets.serving.inference_log import InferenceLog, Submit
from ct_assets.serving.models import ModelHolder

if TYPE_CHECKING:
    from ct_assets.api.app import ApiConfig
    from ct_assets.api.metrics import ApiMetrics


class ApiState:
    def __init__(
        self, config: ApiConfig, metrics: ApiMetrics, stream: EventStream | None = None
    ) -> None:
        self.metrics = metrics
        self.stream = stream
        self.writer: EventLogWriter | None = None
        self.committer: GroupCommitter | None = None
        if stream is None:
            self.writer = EventLogWriter(
                config.eventlog_dir, config.segment_max_bytes, config.max_event_bytes
            )
            self.writer.refresh()
            self.committer = GroupCommitter(self.writer, on_group=self._observe_group)
        serving = config.serving
        self.models = ModelHolder(
            config.tracking_uri, config.model_name, config.artifact_root, serving.poll_seconds
        )
        # served predictions go where ingestion goes (the committer, or the stream)
        self.inference_log = (
            InferenceLog(self._submit_function(), serving.log_queue)
            if serving.log_predictions
            else None
        )

    @property
    def alive(self) -> bool:
        return self.committer.alive if self.committer is not None else self.stream is not None

    async def store(self, batch: PreparedBatch) -> AppendResult:
        """Durable in the log, or acknowledged by the stream, when this returns."""
        if self.stream is not None:
            return await self.stream.publish(batch)
        assert self.committer is not None
        return await asyncio.wrap_future(self.committer.submit(batch))

    def _submit_function(self) -> Submit:
        if self.committer is not None:
            return self.committer.submit
        stream = self.stream
        assert stream is not None
        loop = asyncio.get_running_loop()

        def publish(batch: PreparedBatch) -> Future[AppendResult]:
            return asyncio.run_coroutine_threadsafe(stream.publish(batch), loop)

        return publish

    def close(self) -> None:
        """Stop polling, write every queued prediction, then close the log (called off the
        event loop, which keeps running: the stream's publishes need it)."""
        self.models.close()
        if self.inference_log is not None:
            self.inference_log.close()
        if self.committer is not None:
            self.committer.close()

    def serving_status(self) -> dict[str, Any]:
        status = self.models.snapshot().describe()
        log = self.inference_log
        status["log"] = (
            {"pending": log.pending, "capacity": log.capacity, "written": log.stats.written}
            if log is not None
            else None
        )
        return status

    def event_store_status(self) -> dict[str, Any]:
        if self.stream is None:
            return {"kind": "embedded"}
        return {"kind": "stream", "connected": self.stream.connected}

    def _observe_group(self, stats: GroupStats) -> None:
        self.metrics.group_batches.observe(stats.batches)
