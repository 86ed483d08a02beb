"""Fixtures of the server tests: one real ``python -m sglc serve`` (embedded model, HTTP + gRPC, API key)
shared by every module of this folder (starting the model dominates test time on 2 cores)."""
from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from server_harness import Server, start_server, stop_server


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kills_server: stops the shared server; runs after every other test")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move tests that stop the shared server to the end of the session."""
    items.sort(key=lambda item: item.get_closest_marker("kills_server") is not None)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("sglc-server"))
    yield srv
    stop_server(srv)


@pytest.fixture()
def http(server: Server) -> Iterator[httpx.Client]:
    """An httpx client with the API key, against the shared server."""
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=60.0) as client:
        yield client
