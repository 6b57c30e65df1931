"""Synthetic run records for tests of what reads them (compare, summary, report): typed, like the plugin's."""

from ortgate.record.result import MeasureSettings, ModelInfo, RunResult, VariantResult


def make_run(variants: list[VariantResult], cpu: str = "epyc", data: str = "d", labels=None, predictions=None,
             machine: dict | None = None) -> RunResult:
    return RunResult(
        generated="2026-11-26T00:00:00+0000",
        machine=machine or {"arch": "x86_64", "model_name": cpu, "id": cpu, "flags": []},
        versions={"onnxruntime": "1.32.0"},
        model=ModelInfo("a model", "/m", "fp", "bert", ["NEGATIVE", "POSITIVE"]),
        data=data,
        settings=MeasureSettings(threads=2, max_length=128, eval_batch_size=1, bench_samples=8, bench_rounds=5,
                                 warmup_rounds=1, repeat=1),
        variants=variants,
        best=None,
        labels=labels,
        predictions=predictions,
    )


def benchmark_json(run: RunResult) -> dict:
    """A pytest-benchmark file as the suite saves it: pytest-benchmark's own part, and the record."""
    return {"machine_info": {"ortgate_cpu_id": run.machine_id}, "benchmarks": [],
            "ortgate": run.to_dict(with_predictions=True)}
