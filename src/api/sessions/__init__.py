"""Sessions: the sessionisation job (incremental and exact), its tables, SQL and watermark."""
