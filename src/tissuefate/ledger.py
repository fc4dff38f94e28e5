"""Conservation ledger.

For every conserved quantity (``oxidant`` in mol ClO2, ``ethanol`` in m^3 of ethanol,
``injectate`` in m^3 of injected liquid, later ``tissue_water`` and ``energy``) the ledger keeps
what came in (sources) and the cumulative amount sent to each destination that leaves the
mobile pool (sinks: consumed, decayed, washed out, leaked along the track, ...). The amount
still present (stocks: free in tissue, in the cavity, in the track) is measured from the fields
when the balance is checked, so the check is independent of the bookkeeping::

    sum(sources) = sum(stocks) + sum(sinks)      rel_error = |lhs - rhs| / max(lhs, tiny)

Processes call :meth:`Ledger.add_source` and :meth:`Ledger.add_sink`; every flux is booked once.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class Ledger:
    sources: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))
    sinks: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))

    def add_source(self, quantity: str, account: str, amount: float) -> None:
        self.sources[quantity][account] += float(amount)

    def add_sink(self, quantity: str, account: str, amount: float) -> None:
        self.sinks[quantity][account] += float(amount)

    def total_in(self, quantity: str) -> float:
        return float(sum(self.sources[quantity].values()))

    def total_out(self, quantity: str) -> float:
        return float(sum(self.sinks[quantity].values()))

    def balance(self, quantity: str, stocks: dict[str, float]) -> dict:
        """Balance of ``quantity`` given the stocks measured from the fields now."""
        lhs = self.total_in(quantity)
        rhs = float(sum(stocks.values())) + self.total_out(quantity)
        scale = max(abs(lhs), 1e-300)
        return {
            "in": dict(self.sources[quantity]),
            "out": dict(self.sinks[quantity]),
            "stock": {k: float(v) for k, v in stocks.items()},
            "residual": lhs - rhs,
            "rel_error": abs(lhs - rhs) / scale if lhs != 0 else abs(rhs),
        }

    def to_dict(self) -> dict:
        return {
            "sources": {q: dict(a) for q, a in self.sources.items()},
            "sinks": {q: dict(a) for q, a in self.sinks.items()},
        }
