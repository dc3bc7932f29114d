"""A double-entry ledger in Decimal: every operation is a balanced journal entry.

Owners are account ids plus four system owners: ``external`` (the outside world: deposits and
withdrawals), ``market`` (the order book that takes the other side of liquidations and pays or
receives realised P&L), ``insurance_fund`` and ``fees``. For every asset the postings of an entry
sum to exactly zero, so the sum of all balances (external included) is always zero and the sum
over everything but ``external`` moves only with deposits and withdrawals.

Floats enter only through ``to_amount`` (quantised to 1e-8, ROUND_HALF_EVEN). An entry that fails
a check is refused whole: no balance changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal

from margin_engine.core.errors import InputError

EXTERNAL = "external"
MARKET = "market"
INSURANCE_FUND = "insurance_fund"
FEES = "fees"
SYSTEM_OWNERS = frozenset({EXTERNAL, MARKET, INSURANCE_FUND, FEES})
QUANTUM = Decimal("0.00000001")
ZERO = Decimal(0)


def to_amount(value: float | int | str | Decimal) -> Decimal:
    """The one float -> Decimal boundary: quantised to 1e-8 with banker's rounding."""
    amount = Decimal(str(value)) if not isinstance(value, Decimal) else value
    if not amount.is_finite():
        raise InputError("a finite amount", field="amount", value=value)
    return amount.quantize(QUANTUM, rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True, slots=True)
class Posting:
    owner: str
    asset: str
    amount: Decimal


@dataclass(frozen=True, slots=True)
class JournalEntry:
    sequence: int
    kind: str
    postings: tuple[Posting, ...]
    memo: str = ""


@dataclass(slots=True)
class Ledger:
    balances: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    journal: list[JournalEntry] = field(default_factory=list)
    owners: set[str] = field(default_factory=lambda: set(SYSTEM_OWNERS))

    def open(self, owner: str) -> None:
        if not owner or owner in SYSTEM_OWNERS:
            raise InputError("a new account id (not a system owner)", field="owner", value=owner)
        self.owners.add(owner)

    def balance(self, owner: str, asset: str) -> Decimal:
        return self.balances.get((owner, asset), ZERO)

    def post(self, kind: str, postings: Iterable[tuple[str, str, Decimal]],
             memo: str = "", *, allow_negative: frozenset[str] = frozenset({EXTERNAL, MARKET})
             ) -> JournalEntry:
        """Apply a balanced entry atomically. Owners outside ``allow_negative`` may not go
        below zero, except where the entry itself says so (bad debt is recorded, then covered)."""
        items = [Posting(o, a, to_amount(x)) for o, a, x in postings]
        totals: dict[str, Decimal] = {}
        for p in items:
            if p.owner not in self.owners:
                raise InputError("an open ledger owner", field="owner", value=p.owner)
            totals[p.asset] = totals.get(p.asset, ZERO) + p.amount
        unbalanced = {a: t for a, t in totals.items() if t != ZERO}
        if unbalanced:
            raise InputError("postings that sum to zero per asset", field=kind,
                             value={a: str(t) for a, t in unbalanced.items()})
        after: dict[tuple[str, str], Decimal] = {}
        for p in items:
            key = (p.owner, p.asset)
            after[key] = after.get(key, self.balance(*key)) + p.amount
        for (owner, asset), value in after.items():
            if value < ZERO and owner not in allow_negative:
                raise InputError(f"a balance that stays >= 0 ({owner} {asset} would be {value})",
                                 field=kind, value=str(value))
        self.balances.update(after)
        entry = JournalEntry(len(self.journal), kind, tuple(items), memo)
        self.journal.append(entry)
        return entry

    # --- operations -------------------------------------------------------------------
    def deposit(self, owner: str, asset: str, amount: Decimal) -> JournalEntry:
        self._positive(amount, "deposit")
        return self.post("deposit", [(EXTERNAL, asset, -amount), (owner, asset, amount)])

    def open_with_deposits(self, owners: Iterable[str],
                           deposits: Iterable[tuple[str, str, Decimal]]) -> list[JournalEntry]:
        """Open ``owners`` and deposit (owner, asset, amount > 0) for each: one balanced entry
        per asset (the outside world pays the sum), the balances of one ``deposit`` each, in
        a fraction of the time for a whole book."""
        new = list(owners)
        for owner in new:
            if not owner or owner in SYSTEM_OWNERS:
                raise InputError("a new account id (not a system owner)", field="owner",
                                 value=owner)
        known = self.owners | set(new)
        by_asset: dict[str, list[Posting]] = {}
        for owner, asset, amount in deposits:
            value = to_amount(amount)
            if not value > ZERO:
                raise InputError("an amount > 0", field="deposit", value=str(value))
            if owner not in known:
                raise InputError("an open ledger owner", field="owner", value=owner)
            by_asset.setdefault(asset, []).append(Posting(owner, asset, value))
        self.owners.update(new)  # checked whole: nothing is applied before this point
        entries = []
        for asset, postings in by_asset.items():
            total = sum((p.amount for p in postings), ZERO)
            for p in postings:
                key = (p.owner, asset)
                self.balances[key] = self.balances.get(key, ZERO) + p.amount
            self.balances[(EXTERNAL, asset)] = self.balance(EXTERNAL, asset) - total
            entry = JournalEntry(len(self.journal), "deposit",
                                 (Posting(EXTERNAL, asset, -total), *postings))
            self.journal.append(entry)
            entries.append(entry)
        return entries

    def withdraw(self, owner: str, asset: str, amount: Decimal) -> JournalEntry:
        self._positive(amount, "withdraw")
        return self.post("withdraw", [(owner, asset, -amount), (EXTERNAL, asset, amount)])

    def fee(self, owner: str, asset: str, amount: Decimal) -> JournalEntry:
        self._positive(amount, "fee")
        return self.post("fee", [(owner, asset, -amount), (FEES, asset, amount)])

    def realise(self, owner: str, asset: str, pnl: Decimal, memo: str = "") -> JournalEntry:
        """Realised P&L against the market (negative pnl: the owner pays; may go negative,
        which is bad debt to be covered)."""
        return self.post("realise", [(owner, asset, pnl), (MARKET, asset, -pnl)], memo,
                         allow_negative=frozenset({EXTERNAL, MARKET, owner}))

    def penalty(self, owner: str, asset: str, amount: Decimal) -> JournalEntry:
        self._positive(amount, "penalty")
        return self.post("liquidation_penalty", [(owner, asset, -amount),
                                                 (INSURANCE_FUND, asset, amount)])

    def cover_bad_debt(self, owner: str, asset: str) -> tuple[Decimal, Decimal]:
        """The fund pays what it can of a negative balance: (covered, remaining shortfall)."""
        debt = -self.balance(owner, asset)
        if debt <= ZERO:
            return ZERO, ZERO
        covered = min(debt, max(self.balance(INSURANCE_FUND, asset), ZERO))
        if covered > ZERO:
            self.post("bad_debt_cover", [(INSURANCE_FUND, asset, -covered),
                                         (owner, asset, covered)],
                      allow_negative=frozenset({EXTERNAL, MARKET, owner}))
        return covered, debt - covered

    def transfer(self, kind: str, source: str, target: str, asset: str, amount: Decimal,
                 allow_negative_target: bool = True) -> JournalEntry:
        self._positive(amount, kind)
        negative = frozenset({EXTERNAL, MARKET, target}) if allow_negative_target else \
            frozenset({EXTERNAL, MARKET})
        return self.post(kind, [(source, asset, -amount), (target, asset, amount)],
                         allow_negative=negative)

    def socialise(self, owner: str, asset: str, amount: Decimal,
                  payers: Mapping[str, Decimal]) -> JournalEntry:
        """Spread ``amount`` over ``payers`` pro rata to their weights, exactly: shares are
        rounded down to the quantum and the remainder falls on the largest payer. Payers may go
        negative in this asset (their equity sits in other assets)."""
        self._positive(amount, "socialised_loss")
        weights = {p: w for p, w in payers.items() if w > ZERO}
        total = sum(weights.values(), ZERO)
        if total <= ZERO:
            raise InputError("payers with positive weight", field="socialised_loss")
        shares = {p: (amount * w / total).quantize(QUANTUM, rounding=ROUND_DOWN)
                  for p, w in weights.items()}
        largest = max(weights, key=lambda p: (weights[p], p))
        shares[largest] += amount - sum(shares.values(), ZERO)
        postings = [(p, asset, -s) for p, s in shares.items() if s != ZERO]
        return self.post("socialised_loss", [*postings, (owner, asset, amount)],
                         allow_negative=frozenset({EXTERNAL, MARKET, owner, *shares}))

    def total(self, asset: str, *, include_external: bool = True) -> Decimal:
        return sum((v for (o, a), v in self.balances.items()
                    if a == asset and (include_external or o != EXTERNAL)), ZERO)

    @staticmethod
    def _positive(amount: Decimal, kind: str) -> None:
        if not amount > ZERO:
            raise InputError("an amount > 0", field=kind, value=str(amount))
