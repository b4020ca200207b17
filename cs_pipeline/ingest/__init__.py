"""Raw ingestion: landing files -> ``raw.*`` with PostgreSQL COPY, rejects quarantined."""
