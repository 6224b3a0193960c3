"""Runnable experiments: ``python -m streamrbf.experiments.<name>``."""
