"""Measuring variants: classification metrics, throughput and interleaved speed ratios."""
