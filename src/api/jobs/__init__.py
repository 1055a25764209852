"""Scheduled work: retention."""
