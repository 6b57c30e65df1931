import pytest

from ortgate.measure.throughput import RoundRobin, interleaved_round_times, speed_from_round_times, workload


def test_speed_from_round_times_uses_the_median_round():
    speed = speed_from_round_times([0.1, 0.2, 0.9], 10)
    assert speed.samples_per_s == pytest.approx(50.0)
    assert speed.mean_samples_per_s == pytest.approx(10 / 0.4)
    assert speed.latency_ms == pytest.approx(20.0)
    assert (speed.rounds, speed.samples_per_round) == (3, 10)
    with pytest.raises(ValueError):
        speed_from_round_times([], 10)


def test_interleaving_alternates_abba_and_returns_one_time_per_round():
    calls = []
    a, b = (lambda: calls.append("a")), (lambda: calls.append("b"))
    times_a, times_b = interleaved_round_times(a, b, rounds=4, warmup=1, min_round_seconds=0)
    assert len(times_a) == len(times_b) == 4
    assert "".join(calls) == "ab" + "ab" + "ba" + "ab" + "ba"  # warm-up, then ABBA-style rounds


def test_round_robin_rotates_the_order_so_each_graph_takes_every_position():
    calls = []
    robin = RoundRobin({name: lambda n=name: calls.append(n) for name in "abc"}, warmup=1)
    robin()  # warm-up (untimed) first, then cycle 0
    assert "".join(calls) == "abc" + "abc"
    times = robin.run(6)
    cycles = "".join(calls)[3:]
    assert [cycles[i:i + 3] for i in range(0, 18, 3)] == ["abc", "cba", "bca", "acb", "cab", "bac"]
    assert robin.cycles == 6 and all(len(t) == 6 for t in times.values())
    for name in "abc":  # every position, first to last, twice
        assert sorted(c.index(name) for c in [cycles[i:i + 3] for i in range(0, 18, 3)]) == [0, 0, 1, 1, 2, 2]


def test_workloads_call_the_predictor_once_per_text():
    class Recorder:
        def __init__(self):
            self.encoded, self.ran = 0, 0

        def encode(self, texts):
            self.encoded += 1
            return {"n": len(texts)}

        def run(self, features):
            import numpy as np

            self.ran += 1
            return np.zeros((features["n"], 2))

    predictor = Recorder()
    workload(predictor, ["x", "y", "z"], "end-to-end")()
    assert (predictor.encoded, predictor.ran) == (3, 3)
    run = workload(predictor, ["x", "y"], "model-only")  # tokenizes up front, outside the timed call
    assert predictor.encoded == 5
    run()
    assert (predictor.encoded, predictor.ran) == (5, 5)
    with pytest.raises(ValueError, match="unknown throughput mode"):
        workload(predictor, ["x"], "batched")


def test_harness_check_compares_the_two_loops_on_the_same_inputs(tiny_model, tiny_csv, tmp_path):
    from pathlib import Path

    from ortgate.session import RunSession
    from ortgate.spec.settings import resolve_settings

    settings = resolve_settings({"model": str(tiny_model), "dataset": str(tiny_csv), "cache_dir": str(tmp_path),
                                 "bench_samples": "8", "max_length": "32"}, {}, Path(tmp_path))
    session = RunSession(settings, log=lambda message: None)
    assert session.plan.first_int8_variant() == "dynamic-int8"
    check = session.meter.harness_overhead("dynamic-int8", rounds=4)
    assert check.harness.rounds == check.bare.rounds == 4 and check.harness.samples_per_round == 8
    pair_ratios = sorted(b / h for h, b in zip(check.harness_seconds, check.bare_seconds, strict=True))
    assert check.ratio == pytest.approx((pair_ratios[1] + pair_ratios[2]) / 2)  # median of 4 paired ratios
    assert session.meter.harness_checks == [check] and "bare InferenceSession.run loop" in check.message


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7])
def test_round_robin_puts_every_graph_in_every_position_for_any_count(n):
    """An even count too: rotating by the cycle and reversing odd cycles never led with half of 4 graphs."""
    names = "abcdefg"[:n]
    calls = []
    robin = RoundRobin({name: lambda x=name: calls.append(x) for name in names}, warmup=0)
    robin.run(2 * n)
    cycles = ["".join(calls[i:i + n]) for i in range(0, 2 * n * n, n)]
    for name in names:
        assert sorted(c.index(name) for c in cycles) == sorted(list(range(n)) * 2)
