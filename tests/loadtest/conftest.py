"""Load-harness tests: every one talks to a real TCP server on 127.0.0.1 (a fake one, or ``python -m service``).

All carry the ``integration`` marker; the pure-maths ones run in milliseconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.integration)
