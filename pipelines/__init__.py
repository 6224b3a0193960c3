"""Runnable Beam jobs built on streamrbf (``python -m pipelines.cluster_events``)."""
