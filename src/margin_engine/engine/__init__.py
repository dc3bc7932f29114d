"""The real-time margin monitor: tick -> affected accounts -> recompute -> events."""
