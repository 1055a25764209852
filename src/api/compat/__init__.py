"""Thin routers that speak the APIs of the systems this service replaces."""
