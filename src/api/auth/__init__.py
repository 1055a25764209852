"""API keys: when API_KEYS is set, the interview-API routes require X-API-Key."""
