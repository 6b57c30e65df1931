"""Verdicts within a run: accuracy gates, speed floors, graph-structure rules, the statistics behind them."""
