"""The service's alert checks: on its own schedule it raises the last week's alerts (as
``perflib maintain`` does) and delivers them to Alertmanager when one is configured; after an
acknowledgement it delivers the resolution at once. Each runs on one worker thread, one at a
time, off the event loop; a failure is logged and the next check tries again."""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Future, ThreadPoolExecutor

from perflib.analysis import PerformanceAnalyzer
from perflib.ops.alert_delivery import deliver_alerts
from perflib.serve.metrics import ServiceMetrics

log = logging.getLogger(__name__)


class AlertChecks:
    """Raises and delivers alerts for one service, counting its deliveries in `metrics`."""

    def __init__(self, analyzer: PerformanceAnalyzer, metrics: ServiceMetrics):
        self.analyzer = analyzer
        self.metrics = metrics
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="perflib-alerts")

    def check(self) -> Future:
        """Raise the alerts and deliver them (with any pending ones and resolutions)."""
        return self._executor.submit(self._run, True)

    def deliver(self) -> Future:
        """Deliver pending alerts and resolutions (an alert was just acknowledged)."""
        return self._executor.submit(self._run, False)

    def _run(self, raise_alerts: bool) -> None:
        settings = self.analyzer.config
        try:
            raised = self.analyzer.detect_alerts() if raise_alerts else []
            if settings.alertmanager_url:
                outcome = deliver_alerts(self.analyzer.store, settings, raised,
                                         count=self.metrics.count_delivery)
                log.info("alert check: %s", outcome.describe())
        except Exception:  # logged; the next check tries again, the service keeps serving
            log.exception("alert check failed")

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


async def check_alerts_periodically(checks: AlertChecks, seconds: float) -> None:
    """Every `seconds`, raise and deliver the alerts and wait for it (the app's lifespan
    starts this task and cancels it on shutdown)."""
    while True:
        await asyncio.sleep(seconds)
        await asyncio.wrap_future(checks.check())
