"""Every test of the shipped contract suite, run here on each engine of ``conftest.ENGINES``.

This is the same import an outside engine author writes (see ``dtq_core.testing.contract``).
"""

from dtq_core.testing.contract import *  # noqa: F403
