"""Privacy levels: visitor hashes with daily salts, PII redaction (docs/sites.md)."""
