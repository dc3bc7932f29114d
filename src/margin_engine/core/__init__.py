"""Errors, number parsing, time and array aliases shared by every layer."""
