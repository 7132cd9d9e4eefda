"""``tidemark status --slo``: the verdict a person reads for each mart's yesterday."""

from __future__ import annotations

from tidemark.cli.slo import page
from tidemark.settings import Settings


def _mart(yesterday: str, pairs: list[str]) -> dict:
    return {"mart": "fct_daily_x", "closed_through": "2026-12-01", "yesterday": yesterday,
            "reconciled_by": pairs, "held_by": "shop.orders", "watermark": "2026-12-02 00:10"}


def _promise(row: dict) -> dict:
    slo = page({"ingestion": {"error": "not asked"}, "finality": [row]}, Settings())
    (promise,) = slo["promises"]
    assert promise["promise"] == "fct_daily_x: yesterday"
    return {**promise, "verdict": slo["verdict"]}


def test_a_final_day_keeps_the_promise() -> None:
    got = _promise(_mart("final", ["x_pair"]))
    assert (got["state"], got["verdict"]) == ("ok", "kept")
    assert "reconciled (x_pair)" in got["why"]


def test_a_closed_day_of_a_mart_no_view_reconciles_is_done() -> None:
    got = _promise(_mart("closed", []))
    assert (got["state"], got["verdict"]) == ("ok", "kept")
    assert "no live view reconciles" in got["why"]


def test_a_closed_day_waiting_for_its_reconciliation_is_pending_not_open() -> None:
    got = _promise(_mart("closed", ["x_pair"]))
    assert (got["state"], got["verdict"]) == ("pending", "at risk")
    assert "not reconciled yet (x_pair)" in got["why"] and "open" not in got["why"]


def test_an_open_day_names_the_table_holding_it() -> None:
    got = _promise(_mart("open", ["x_pair"]))
    assert (got["state"], got["verdict"]) == ("open", "at risk")
    assert "held by the watermark of shop.orders (2026-12-02 00:10)" in got["why"]


def test_the_verdict_names_the_states_it_counts_as_at_risk(capsys) -> None:
    """The verdict's 'at risk' count is spelled out in the words the table uses (pending,
    unknown...), so a reader can find those promises."""
    from tidemark.cli.slo import show_verdict

    rows = [_mart("closed", ["x_pair"]), _mart("closed", ["y_pair"]), _mart("open", ["z"])]
    show_verdict(page({"ingestion": {"error": "not asked"}, "finality": rows}, Settings()))
    out = " ".join(capsys.readouterr().out.split())
    assert "AT RISK (0 missed, 3 at risk: 1 open, 2 pending, 3 promises)" in out
