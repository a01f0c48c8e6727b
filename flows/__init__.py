"""Prefect flows: compose the tasks into ingest, validate, train, promote and predict."""
