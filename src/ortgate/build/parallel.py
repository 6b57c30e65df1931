"""Parallel builds: independent variants built at the same time in worker processes (spawned: the parent
process may already run ONNX Runtime and torch thread pools), parents before children."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

from ortgate.build.builder import Builder, BuildStatus
from ortgate.cache import Cache
from ortgate.errors import BuildError, first_line


def build_in_parallel(builder: Builder, todo: list[str], jobs: int, on_done: Callable[[str], None]) -> None:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    remaining, running, results = list(todo), {}, 0
    payload = (builder.variants, builder.model, str(builder.cache.root), builder.calibration_texts,
               builder.max_length)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        while remaining or running:
            for vid in list(remaining):
                parent = builder.variants.specs[vid].parent
                if parent in builder.failures:  # recorded as a failure of its own, without a build
                    remaining.remove(vid)
                    with contextlib.suppress(BuildError):
                        builder.build(vid)
                    on_done(vid)
                elif parent is None or builder.status(parent) is BuildStatus.BUILT:
                    if len(running) < jobs:
                        remaining.remove(vid)
                        running[pool.submit(_build_in_worker, payload, vid)] = vid
            if not running:
                continue
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                vid = running.pop(future)
                try:
                    ok, result, lines = future.result()
                except BrokenProcessPool as exc:
                    if not results:
                        builder.log(f"[ortgate] parallel builds could not start ({exc}); building one at a time")
                        return
                    # A worker died (killed: out of memory?); which of the running builds caused it is
                    # unknown, so none of them is retried. The rest build one at a time, here.
                    reason = "a build worker died while this variant was building (killed, e.g. out of memory)"
                    ok, result, lines = False, BuildError(f"building variant {vid} failed: {reason}", reason), []
                    for other in running.values():
                        builder.failures[other] = BuildError(f"building variant {other} failed: {reason}", reason)
                        on_done(other)
                    running.clear()
                    builder.record(vid, ok, result, lines, on_done)
                    return
                builder.record(vid, ok, result, lines, on_done)
                results += 1


def _build_in_worker(payload, variant_id: str):
    """Worker process: build one variant (its parents are already in the cache)."""
    variants, model, cache_root, texts, max_length = payload
    lines: list[str] = []

    def log(line: str) -> None:  # this variant's lines only (its parents are cache hits, logged before)
        if variant_id in line:
            lines.append(line)

    builder = Builder(variants, model, Cache(Path(cache_root)), texts, max_length, log=log)
    try:
        return True, builder.build(variant_id), lines
    except BuildError as exc:
        return False, exc, lines
    except Exception as exc:  # anything else (disk full, a lock timeout) is this variant's failure too
        reason = f"{type(exc).__name__}: {first_line(exc)}"
        return False, BuildError(f"building variant {variant_id} failed: {reason}", reason), lines
