"""Health, liquidation prices, partial liquidation, insurance fund, ADL and circuit breaker."""
