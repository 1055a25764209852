"""The event-analytics service: one package per domain."""

import warnings

from pydantic.warnings import UnsupportedFieldAttributeWarning

# FastAPI re-wraps body models; pydantic then warns about aliases that still work as declared.
warnings.filterwarnings("ignore", category=UnsupportedFieldAttributeWarning)
# Aggregation SQL is text() run through session.execute(); sqlmodel would rather see exec().
warnings.filterwarnings("ignore", message=r"(?s).*You probably want to use", category=DeprecationWarning)
