"""Plugins loading and appearing while a worker runs, on every engine (uses this repo's fake site)."""

from __future__ import annotations

import pytest
from dtqtest import FakeSite, unique_module

from dtq_core import PluginLoadError, Queue, Worker
from dtq_core.testing import running, wait_for


def test_plugin_errors_at_load_are_typed(fake_site: FakeSite, dtq_url: str, dtq_namespace: str) -> None:
    module = unique_module()
    fake_site.add("dtq-plugin-broken", "1.0", {"broken": f"{module}:X"}, {module: "import nope_nope\n"})
    with pytest.raises(PluginLoadError, match=r"dtq-plugin-broken 1\.0 failed to import"):
        Worker(["broken"], dtq_url, namespace=dtq_namespace)


def test_worker_without_allow_list_serves_a_plugin_installed_while_it_runs(
    dtq_url: str, dtq_namespace: str, fake_site: FakeSite
) -> None:
    worker = Worker(None, dtq_url, namespace=dtq_namespace, mode="thread", poll_s=0.05, rescan_s=0.1)
    with running(worker):
        module = unique_module()
        source = (
            "from dtq_core import Plugin\n\n"
            "class P(Plugin):\n    def process(self, job):\n        return 'late'\n"
        )

        fake_site.add("dtq-plugin-late", "1.0", {"late_plugin": f"{module}:P"}, {module: source})
        with Queue(None, dtq_url, namespace=dtq_namespace) as queue:
            wait_for(lambda: queue.registry.refresh() or queue.registry.is_installed("late_plugin"))
            queue.enqueue("late_plugin", {}, id="late-job")
            assert queue.result("late-job", timeout=20) == "late"
    assert "late_plugin" in worker.plugins
