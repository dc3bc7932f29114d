"""The demo: a realistic strategy book margined under every model."""
