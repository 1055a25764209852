"""Every notebook runs headlessly (nbclient) against a live server on the test database, in
order, without errors, and draws its plots."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="notebook requirements are not installed")
nbclient = pytest.importorskip("nbclient", reason="notebook requirements are not installed")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def live_server() -> Iterator[str]:
    from benchmarks.server import running_server

    with running_server(os.environ["DATABASE_URL"]) as (base, _):
        yield base


def test_notebooks_are_saved_without_outputs() -> None:
    assert [p.name for p in NOTEBOOKS] == ["01_send_events.ipynb", "02_explore_buckets.ipynb", "03_sql_view.ipynb"]
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, path.name


def test_notebooks_run_and_plot(live_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANALYTICS_API_URL", live_server)
    monkeypatch.setenv("NOTEBOOK_SITE", f"nb-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("NOTEBOOK_EVENTS", "2500")
    images = {}
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        client = nbclient.NotebookClient(
            notebook, timeout=120, kernel_name="python3",
            resources={"metadata": {"path": str(path.parent)}},
        )
        client.execute()  # raises CellExecutionError on any failing cell
        images[path.name] = sum(
            1 for cell in notebook.cells if cell.cell_type == "code"
            for output in cell.get("outputs", []) if "image/png" in output.get("data", {})
        )
    assert images["01_send_events.ipynb"] == 0
    assert images["02_explore_buckets.ipynb"] >= 6
