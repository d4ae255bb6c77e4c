"""Which instances get a card: worst first, plus a stratified spread when capped."""

from __future__ import annotations

from typing import Sequence


def worst_first(cards: Sequence[dict]) -> list[dict]:
    """Cards by amodal IoU ascending (then visible IoU, then gt_id)."""
    return sorted(cards, key=lambda c: (c["iou_amodal"], c["iou_visible"], c["gt_id"]))


def choose(cards: Sequence[dict], max_cards: int | None) -> list[dict]:
    """Every card when `max_cards` is None or not exceeded; else the worst half of the cap,
    then the rest taken round-robin over (bucket, class) strata, each stratum worst first.
    Returned worst first."""
    ordered = worst_first(cards)
    if max_cards is None or len(ordered) <= max_cards:
        return ordered
    n_worst = max_cards // 2
    chosen = ordered[:n_worst]
    strata: dict[tuple[str, str], list[dict]] = {}
    for c in ordered[n_worst:]:
        strata.setdefault((c["bucket"], c["category"]), []).append(c)
    queues = [strata[k] for k in sorted(strata)]
    depth = 0
    while len(chosen) < max_cards:
        for q in queues:
            if depth < len(q) and len(chosen) < max_cards:
                chosen.append(q[depth])
        depth += 1
    return worst_first(chosen)
