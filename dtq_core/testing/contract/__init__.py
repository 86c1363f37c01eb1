"""The engine contract suite: every engine, ours or a third party's, must pass all of it.

It drives real queues and workers through the engine (append, dedupe by id,
leases and fencing, retries, dead letters, delays, priorities, cancellation,
progress, results, periodic jobs, lifecycle events and outcome counts), so an
engine that passes behaves like the Redis engine everywhere dtq depends on it.
Jobs go to the ``test_only`` and ``test_only_async`` plugins: ``pip install
dtq-plugins-testonly`` first.

The fixtures come from dtq's pytest plugin (:mod:`dtq_core.testing`):
``dtq_url`` picks the engine, ``dtq_namespace`` isolates each test,
``dtq_engine``, ``dtq_queue`` and ``dtq_make_worker`` are built on them.

Run it against an engine reachable by URL::

    pytest --pyargs dtq_core.testing.contract --dtq-url myengine://localhost/test

or, when the engine needs a fixture of yours (a server to start, say), import
the tests into a module of your own and override ``dtq_url`` there::

    from dtq_core.testing.contract import *  # noqa: F403  (every contract test)

    @pytest.fixture
    def dtq_url(my_server) -> str:
        return f"myengine://{my_server.address}"
"""

from __future__ import annotations

from dtq_core.plugin import PluginRegistry

_NEEDED = ("test_only", "test_only_async")


def _require_test_plugins() -> None:
    statuses = {row.name: row for row in PluginRegistry(list(_NEEDED)).statuses()}
    missing = [f"{name} ({statuses[name].status})" for name in _NEEDED if statuses[name].status != "ok"]
    if missing:
        raise RuntimeError(
            f"the dtq contract suite runs jobs through plugins that do not load here: {', '.join(missing)}. "
            "Install them with: pip install dtq-plugins-testonly"
        )


_require_test_plugins()

from dtq_core.testing.contract.test_browse import *  # noqa: E402, F403
from dtq_core.testing.contract.test_bulk import *  # noqa: E402, F403
from dtq_core.testing.contract.test_events import *  # noqa: E402, F403
from dtq_core.testing.contract.test_leases import *  # noqa: E402, F403
from dtq_core.testing.contract.test_lifecycle import *  # noqa: E402, F403
from dtq_core.testing.contract.test_periodic import *  # noqa: E402, F403
from dtq_core.testing.contract.test_queue import *  # noqa: E402, F403
