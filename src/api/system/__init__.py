"""Liveness, readiness and the root greeting."""
