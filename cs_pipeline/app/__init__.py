"""User-facing applications built on the pipeline's tables (the dashboard in ``app.dashboard``)."""
