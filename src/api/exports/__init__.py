"""Exports: raw events to files in S3 or a folder, exactly once by a received_at watermark and
snapshots (docs/exports.md), and their per-client processing."""
