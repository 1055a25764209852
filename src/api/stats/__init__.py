"""Aggregation: parsing questions (intervals, zones, ranges), planning, and the stats routes."""
