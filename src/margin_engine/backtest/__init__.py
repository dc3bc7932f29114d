"""Backtesting: coverage statistics and margin-model replays on real history."""
