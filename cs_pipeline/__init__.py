"""cs_pipeline: a customer-success data pipeline on Dagster, dbt and PostgreSQL."""

__version__ = "0.1.0"
