"""Keeping the Apache edition's rollups exact: maintenance SQL and the tier job."""
