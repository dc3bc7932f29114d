"""A monitor compiles (or loads from numba's cache) every kernel its ticks run while it is
built, not on its first ticks: from a cold cache the first tick of a 100,000-account monitor
took 1.2-2.1 s (the pool health, the collateral by asset, the statuses, the haircuts of the
accounts holding a moved asset), against about 20 ms after."""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = r"""
import json
import numpy as np
from numba.core.registry import CPUDispatcher

from margin_engine.bench.run import instrument_names, random_book_columns
from margin_engine.book.columnar import MODE_CODES, book_from_columns
from margin_engine.demo.market import demo_market_document
from margin_engine.domain.instruments import MarginMode, parse_shorthand
from margin_engine.engine.monitor import Monitor
from margin_engine.io.market_file import parse_market
from margin_engine.margin.config import RiskConfig
from margin_engine.store.base import Tick
import margin_engine


def kernels():
    # every compiled function of the package, by name, with its compiled signatures
    import sys as system
    found = {}
    for name, module in list(system.modules.items()):
        if not name.startswith("margin_engine"):
            continue
        for attribute, value in vars(module).items():
            if isinstance(value, CPUDispatcher):
                found[f"{name}.{attribute}"] = len(value.signatures)
    return found


names = instrument_names(200)
columns = random_book_columns(300, 6, names, 3)
instruments = [parse_shorthand(n) for n in names]
book = book_from_columns(
    account_ids=columns["account_ids"],
    mode=np.full(300, MODE_CODES[MarginMode.PORTFOLIO], dtype=np.int32),
    instruments=[i for i in instruments if i is not None],
    position_account=columns["position_account"],
    position_instrument=columns["position_instrument"], size=columns["size"],
    entry_price=columns["entry_price"], assets=("BTC", "USDC"), collateral=columns["collateral"])
market = parse_market(demo_market_document())
monitor = Monitor(book, market, RiskConfig())
before = kernels()
t0 = market.timestamp_ns
for k, (symbol, price) in enumerate([("BTC", 65100.0), ("ETH", 2510.0), ("BTC", 64900.0),
                                     ("ETH", 2490.0)]):
    outcome = monitor.process(Tick(k + 1, t0 + (k + 1) * 10**9, symbol, price))
    assert outcome.accepted, outcome
after = kernels()
print(json.dumps({name: [before.get(name, 0), count] for name, count in after.items()
                  if count != before.get(name, 0)}))
"""


def test_the_first_ticks_compile_nothing() -> None:
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    compiled_on_ticks = json.loads(done.stdout.strip().splitlines()[-1])
    assert compiled_on_ticks == {}
