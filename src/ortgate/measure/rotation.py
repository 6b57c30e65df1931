"""The order in which interleaved measurements take turns (round-robin cycles, latency blocks, footprint rounds).

Rounds go in pairs: the second of a pair is the first reversed, so within each pair every item's two positions
add up alike and a steady drift of the machine weighs on all items alike; each pair is rotated by one more, so over
2n rounds every item takes every position twice, whatever n is. (Rotating by the round and reversing odd rounds,
the order used before, undoes itself for an even count: with 4 items a and c led every round, b and d never did;
with 2, every round ran a then b.)
"""

from __future__ import annotations

from collections.abc import Sequence


def round_order(items: Sequence, round_index: int) -> list:
    if not items:
        return []
    shift = (round_index // 2) % len(items)
    order = list(items[shift:]) + list(items[:shift])
    return order if round_index % 2 == 0 else order[::-1]
