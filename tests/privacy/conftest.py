from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.sites.helpers import clear_sites_and_keys


@pytest.fixture
async def clean_sites(engine: AsyncEngine) -> AsyncIterator[None]:
    """No site or key before the test, and none left after it (a key left behind would make
    every other test's reads need one)."""
    await clear_sites_and_keys(engine)
    yield
    await clear_sites_and_keys(engine)
