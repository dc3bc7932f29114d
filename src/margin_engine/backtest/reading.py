"""How to read a backtest summary: each statistic's label, unit and meaning, and a verdict in
words (used by the command line's table and the HTML report)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SIGNIFICANCE = 0.05  # a test's p-value below this rejects the margin


@dataclass(frozen=True, slots=True)
class Statistic:
    key: str
    label: str
    unit: str  # count, number, usd, percent, rate (a fraction shown in %), p, multiple, text
    meaning: str


STATISTICS = (
    Statistic("observations", "days backtested", "count",
              "days with both a margin and the loss over the MPOR that followed"),
    Statistic("exceptions", "exceptions", "count",
              "days the loss over the MPOR exceeded the margin"),
    Statistic("expected_exceptions", "expected exceptions", "number",
              "observations x (1 - confidence): what a margin at exactly the confidence level "
              "would see"),
    Statistic("exception_rate", "exception rate", "rate",
              "exceptions / observations; the target is 1 - confidence"),
    Statistic("kupiec_lr", "Kupiec LR", "number",
              "likelihood ratio of the exception count against the expected one (chi-square, "
              "1 degree of freedom)"),
    Statistic("kupiec_p", "Kupiec p-value", "p",
              "chance of a count this far from the expected one (too many or too few) if the "
              "margin were right; below 0.05 the coverage is rejected"),
    Statistic("christoffersen_p", "Christoffersen p-value", "p",
              "independence: below 0.05 an exception makes the next day's more likely "
              "(exceptions cluster)"),
    Statistic("conditional_coverage_p", "conditional coverage p-value", "p",
              "coverage and independence tested together"),
    Statistic("traffic_light", "Basel traffic light", "text",
              "zone from the exception count alone: green = not too many; too few exceptions "
              "(over-margining) still shows green"),
    Statistic("mean_margin", "mean margin", "usd", "initial margin, mean over the days"),
    Statistic("median_margin", "median margin", "usd", "initial margin, median over the days"),
    Statistic("mean_margin_rate", "mean margin rate", "rate",
              "margin / gross notional, mean over the days"),
    Statistic("mean_efficiency", "mean efficiency", "multiple",
              "gross notional / margin, mean over the days"),
    Statistic("max_1d_increase", "largest 1-day margin rise", "rate",
              "largest rise of the margin in USD from one day to the next (price moves "
              "included)"),
    Statistic("max_5d_increase", "largest 5-day margin rise", "rate",
              "largest rise of the margin in USD over 5 days (price moves included)"),
    Statistic("max_5d_rate_increase", "largest 5-day margin-rate rise", "rate",
              "largest rise of margin / notional over 5 days: the model's own procyclicality "
              "(0 for a fixed-rate model)"),
    Statistic("peak_to_trough", "peak / trough margin", "multiple",
              "highest margin / lowest margin over the history (price moves included)"),
    Statistic("mean_shortfall", "mean shortfall", "usd",
              "loss beyond the margin, mean over the exception days (0: no exception)"),
    Statistic("worst_shortfall", "worst shortfall", "usd",
              "loss beyond the margin on the worst exception day"),
)


def p_value(p: float) -> str:
    """A p-value in plain decimals: '< 0.0001' rather than 8.2e-08."""
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}"


def format_statistic(stat: Statistic, value: Any) -> str:
    """The value with its unit, never in scientific notation."""
    if value is None:
        return "-"
    if stat.unit == "count":
        return f"{int(value):,}"
    if stat.unit == "number":
        return f"{float(value):,.2f}"
    if stat.unit == "usd":
        return f"{float(value):,.2f} USD"
    if stat.unit == "rate":
        shown = 100 * float(value)
        return f"{0.0 if abs(shown) < 0.005 else shown:,.2f} %"  # float noise is not a rise
    if stat.unit == "p":
        return p_value(float(value))
    if stat.unit == "multiple":
        return f"{float(value):,.2f}x"
    return str(value)


def statistics_rows(summary: dict[str, Any]) -> list[tuple[Statistic, str]]:
    """(statistic, formatted value) for every statistic the summary holds, in reading order."""
    return [(stat, format_statistic(stat, summary[stat.key])) for stat in STATISTICS
            if stat.key in summary]


def verdict(summary: dict[str, Any]) -> list[str]:
    """The summary in words: coverage (too conservative, too aggressive or consistent with the
    confidence level), what the traffic light does and does not say, clustering, and how much
    the margin moves."""
    n, x = int(summary["observations"]), int(summary["exceptions"])
    expected = float(summary["expected_exceptions"])
    confidence = float(summary["confidence"])
    p = float(summary["kupiec_p"])
    target = f"{confidence:.1%}"
    counted = f"{x:,} exceptions in {n:,} days where {expected:,.1f} were expected"
    lines: list[str] = []
    if p < SIGNIFICANCE and x < expected:
        lines.append(f"Rejected as too conservative: {counted} (Kupiec p-value "
                     f"{p_value(p)}). The margin covers far more than {target} of the "
                     "losses: safe, but it asks for more collateral than the confidence level "
                     "needs.")
    elif p < SIGNIFICANCE:
        lines.append(f"Rejected as too aggressive: {counted} (Kupiec p-value {p_value(p)}). "
                     f"The margin covers less than {target} of the losses.")
    else:
        lines.append(f"Coverage consistent with {target}: {counted} (Kupiec p-value "
                     f"{p_value(p)}, not below {SIGNIFICANCE}).")
    zone = summary.get("traffic_light")
    if zone is not None:
        note = {"green": "not too many exceptions", "yellow": "more exceptions than expected, "
                "within the Basel tolerance", "red": "too many exceptions"}.get(str(zone), "")
        extra = " (it does not flag too few)" if zone == "green" and x < expected else ""
        lines.append(f"Basel traffic light {zone}: {note}{extra}.")
    ind = summary.get("christoffersen_p")
    if ind is not None and x > 1:
        lines.append(f"Exceptions cluster (Christoffersen p-value {p_value(float(ind))})."
                     if ind < SIGNIFICANCE else
                     f"Exceptions do not cluster (Christoffersen p-value "
                     f"{p_value(float(ind))}).")
    rate = summary.get("max_5d_rate_increase")
    spread = summary.get("peak_to_trough")
    if rate is not None and spread is not None:
        stat = next(s for s in STATISTICS if s.key == "max_5d_rate_increase")
        lines.append(f"Procyclicality: the margin rate rose at most "
                     f"{format_statistic(stat, rate)} in 5 days; the margin in USD ranged "
                     f"{float(spread):,.2f}x from trough to peak, price moves included.")
    return lines
