"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from berth.hub_config.catalog import Catalog
from berth.hub_config.loader import load_catalog

from .hubtest import EXAMPLE_CATALOG, Hub, running_hub

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="session")
def example_catalog() -> Catalog:
    return load_catalog(EXAMPLE_CATALOG)


@pytest.fixture(scope="module")
def local_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """A real hub (local backend, the example catalog) shared by a test module."""
    with running_hub(tmp_path_factory.mktemp("hub")) as hub:
        yield hub


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where tests keep what a person may want to look at afterwards (screenshots)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
