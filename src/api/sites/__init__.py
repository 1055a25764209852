"""Sites: the registry of client companies' domains, site authorization at ingest, CORS."""
