"""Every notebook runs headlessly (nbclient) against a live server on the test database, in
order, without errors, and draws its plots."""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip(
    "nbformat", reason="notebook requirements are not installed (notebooks/requirements.txt)"
)
nbclient = pytest.importorskip(
    "nbclient", reason="notebook requirements are not installed (notebooks/requirements.txt)"
)
pytest.importorskip(
    "ipykernel", reason="notebook requirements are not installed (notebooks/requirements.txt)"
)

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EVENTS = 2500


@pytest.fixture(scope="module")
def live_server() -> Iterator[str]:
    from benchmarks.server import running_server

    with running_server(os.environ["DATABASE_URL"]) as (base, _):
        yield base


@pytest.fixture
def kernel_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, live_server: str) -> None:
    """What the kernel inherits: the live server, a fresh site, and a python3 kernel that is
    this interpreter (not whatever kernelspec the machine has)."""
    monkeypatch.setenv("ANALYTICS_API_URL", live_server)
    monkeypatch.setenv("NOTEBOOK_SITE", f"nb-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("NOTEBOOK_EVENTS", str(EVENTS))
    spec = tmp_path / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "Python 3", "language": "python"})
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    # ipykernel chooses its inline backend (PNG outputs, rendered with Agg: no display needed)
    # only when MPLBACKEND is unset; a CI's MPLBACKEND=Agg would make plt.show() draw nothing.
    monkeypatch.delenv("MPLBACKEND", raising=False)


def code_cells(notebook: Any) -> list[Any]:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def test_notebooks_are_saved_without_outputs() -> None:
    assert [p.name for p in NOTEBOOKS] == [
        "01_send_events.ipynb",
        "02_explore_buckets.ipynb",
        "03_sql_view.ipynb",
    ]
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        assert notebook.metadata["kernelspec"]["name"] == "python3"
        for cell in code_cells(notebook):
            assert cell.outputs == [] and cell.execution_count is None, path.name


@pytest.mark.usefixtures("kernel_env")
def test_notebooks_run_and_plot() -> None:
    executed = {}
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        client = nbclient.NotebookClient(
            notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
        )
        client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
        executed[path.name] = notebook

    def text_of(cell: Any) -> str:
        return "".join(
            output.get("text", "") + output.get("data", {}).get("text/plain", "") for output in cell.outputs
        )

    # 1: the progress bar ran to the end, every event was accepted, the resend was all duplicates.
    sent = "\n".join(text_of(cell) for cell in code_cells(executed["01_send_events.ipynb"]))
    assert f"{EVENTS}/{EVENTS}" in sent and "100%" in sent
    assert f"accepted {EVENTS}, duplicates 0" in sent

    # 2: every cell that shows a figure produced a PNG.
    plots = [cell for cell in code_cells(executed["02_explore_buckets.ipynb"]) if "plt.show()" in cell.source]
    assert len(plots) >= 5
    for cell in plots:
        assert any("image/png" in output.get("data", {}) for output in cell.outputs), cell.source[:80]

    # 3: the API's statement read the rollup, and its plan was printed.
    sql = "\n".join(text_of(cell) for cell in code_cells(executed["03_sql_view.ipynb"]))
    assert "event_rollup_15m" in sql and "time_bucket" in sql
    assert "Scan" in sql  # EXPLAIN output
