"""Batches of partitioned bulk books over Dask workers (``margin-engine batch``)."""
