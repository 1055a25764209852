"""Importing files of events (`python -m src.cli import FILE`): streaming readers for CSV and
NDJSON (`reader.py`), the import loop through the ingest path (`service.py`), and what the
command shows while and after it runs (`progress.py`)."""
