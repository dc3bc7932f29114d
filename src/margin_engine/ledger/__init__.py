"""Exact money: balanced journal entries over Decimal balances."""

from margin_engine.ledger.journal import EXTERNAL, FEES, INSURANCE_FUND, MARKET, Ledger, to_amount

__all__ = ["EXTERNAL", "FEES", "INSURANCE_FUND", "MARKET", "Ledger", "to_amount"]
