"""The perflib HTTP service: estimates with the pre-start queue ETA, trends, bottlenecks, alerts,
weekly reports, job ingestion (spooled while the database is down), retraining, Prometheus
metrics and a live dashboard. Run it with ``python -m perflib.serve``."""
from perflib.serve.app import create_app
from perflib.serve.server import main

__all__ = ["create_app", "main"]
