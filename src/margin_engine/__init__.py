"""margin-engine: portfolio-margin and liquidation risk engine for crypto derivatives."""

__version__ = "0.1.0"
