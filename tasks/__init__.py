"""Prefect task adapters: thin wrappers that give mammo/ its I/O, retries and error policy."""
