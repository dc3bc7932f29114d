"""`margin-engine bench`: the portfolio model on a seeded random book vs a naive baseline."""
