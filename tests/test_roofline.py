"""GEMM rooflines: the ceiling cache, the roofline arithmetic and the preset decision (the MAC counts they divide:
test_macs.py). No speed is asserted: the machines are noisy."""

from __future__ import annotations

import json

import pytest

from ortgate.measure import roofline as rl
from ortgate.measure.macs import GEMM_KINDS, GemmShape, MacCount, count_macs
from test_macs import H, bert_like


def _fake(kind, m, k, n, threads, *_args):
    return rl.GemmCeiling(kind, m, k, n, threads, macs_per_s=1e9 * (k + n), seconds_per_call=1e-4, calls=10)


def _fake_many(shapes, threads, *_args):
    return [_fake(*shape, threads) for shape in shapes]


def test_ceilings_are_measured_once_per_machine(tmp_path, monkeypatch):
    measured = []
    monkeypatch.setattr(rl, "measure_gemms", lambda shapes, *a: measured.extend(shapes) or _fake_many(shapes, *a))
    shapes = [("fp32", 22, 384, 1536), ("u8s8", 22, 384, 1536), ("fp32", 22, 384, 1536)]
    first = rl.measure_ceilings(shapes, 2, tmp_path, log=lambda _: None)
    assert measured == [("fp32", 22, 384, 1536), ("u8s8", 22, 384, 1536)]
    again = rl.measure_ceilings(shapes[:2] + [("u8u8", 22, 384, 384)], 2, tmp_path, log=lambda _: None)
    assert measured[2:] == [("u8u8", 22, 384, 384)]  # only the new shape
    assert again[("fp32", 22, 384, 1536)] == first[("fp32", 22, 384, 1536)]
    rl.measure_ceilings(shapes, 1, tmp_path, log=lambda _: None)  # other thread count: other ceilings
    assert len(measured) == 5
    rl.measure_ceilings(shapes[:1], 1, tmp_path, log=lambda _: None, refresh=True)
    assert len(measured) == 6
    files = list((tmp_path / "roofline").glob("gemm-*.json"))
    assert len(files) == 1 and len(json.loads(files[0].read_text())["entries"]) == 5


def test_an_unreadable_cache_is_measured_again(tmp_path, monkeypatch):
    monkeypatch.setattr(rl, "measure_gemms", _fake_many)
    rl.measure_ceilings([("fp32", 4, 8, 8)], 1, tmp_path, log=lambda _: None)
    cache = next((tmp_path / "roofline").glob("gemm-*.json"))
    cache.write_text("{not json")
    lines = []
    ceilings = rl.measure_ceilings([("fp32", 4, 8, 8)], 1, tmp_path, log=lines.append)
    assert "unreadable" in lines[0] and len(ceilings) == 1 and json.loads(cache.read_text())["entries"]


def test_roofline_sums_each_gemm_at_its_nearest_ceiling():
    count = MacCount(22, {"u8s8": 0, "fp32": 0},
                     (GemmShape("u8s8", 22, 384, 1536, 6), GemmShape("u8s8", 1, 384, 384, 1)),
                     (GemmShape("fp32", 22, 32, 22, 72),))
    ceilings = [rl.GemmCeiling("u8s8", 22, 384, 1536, 2, 3e11, 1, 1),
                rl.GemmCeiling("u8s8", 22, 384, 384, 2, 2e11, 1, 1),
                rl.GemmCeiling("fp32", 22, 384, 384, 2, 1e11, 1, 1)]
    result = rl.roofline(count, ceilings)
    expected = {"u8s8": 6 * 22 * 384 * 1536 / 3e11 + 384 * 384 / 2e11, "fp32": 72 * 22 * 32 * 22 / 1e11}
    assert result.seconds_per_sample_by_kind == pytest.approx(expected)
    assert result.ceiling_samples_per_s == pytest.approx(1 / sum(expected.values()))
    assert rl.achieved_fraction(result.ceiling_samples_per_s / 4, result) == pytest.approx(0.25)
    with pytest.raises(KeyError, match="u8u8"):
        rl.nearest_ceiling(ceilings, "u8u8", 22, 384, 384)


def test_ceiling_over_lengths_is_samples_over_summed_seconds(tmp_path):
    path = bert_like(tmp_path)
    ceilings = rl.Ceilings({("fp32", 8, H, H): rl.GemmCeiling("fp32", 8, H, H, 1, 1e9, 1, 1)})
    lengths = [4, 9, 9, 30]
    over = rl.ceiling_for_lengths(path, lengths, ceilings)
    seconds = sum(count_macs(path, s).total / 1e9 for s in lengths)
    assert over.ceiling_samples_per_s == pytest.approx(len(lengths) / seconds)
    assert over.mean_tokens == 13 and over.samples == 4


def test_variant_roofline_measures_the_median_lengths_shapes(tmp_path, monkeypatch):
    measured = []
    monkeypatch.setattr(rl, "measure_gemms", lambda shapes, *a: measured.extend(shapes) or _fake_many(shapes, *a))
    path = bert_like(tmp_path)
    result = rl.variant_roofline(path, [3, 7, 7, 40], 2, tmp_path, log=lambda _: None)
    assert {m for _kind, m, _k, _n in measured} == {7, 1}  # the median length's M, and the pooler's
    assert result.samples == 4 and result.ceiling_samples_per_s > 0
    assert rl.achieved_fraction(result.ceiling_samples_per_s / 2, result.ceiling_samples_per_s) == 0.5


def test_ceiling_shapes_cover_attention_kinds_without_weights():
    count = MacCount(22, {}, (GemmShape("u8s8", 22, 384, 1536),), (GemmShape("u8u8", 22, 32, 22, 72),))
    assert rl.ceiling_shapes(count) == [("u8s8", 22, 384, 1536), ("u8u8", 22, 384, 1536)]


VNNI = {"arch": "x86_64", "flags": ["avx2", "avx512_vnni", "avx512bw", "avx512f", "avx512vl"]}
AVX2 = {"arch": "x86_64", "flags": ["avx2"]}


@pytest.mark.parametrize(("figures", "fingerprint", "preset"), [
    ({"u8s8": 330e9, "u8u8": 155e9, "fp32": 100e9}, VNNI, "avx512_vnni"),  # the EPYC of the issue
    ({"u8s8": 330e9, "u8u8": 330e9}, VNNI, "avx2"),  # u8 weights as fast: the flags are overruled
    ({"u8s8": 300e9, "u8u8": 280e9}, VNNI, "avx512_vnni"),  # too close: the flags decide
    ({"u8s8": 300e9, "u8u8": 280e9}, AVX2, "avx2"),
    ({"u8s8": 300e9, "u8u8": 200e9}, AVX2, "arm64"),  # s8 faster where the flags said avx2
    ({"u8s8": 300e9}, VNNI, "avx512_vnni"),  # nothing to compare: flags only
])
def test_suggest_preset_measured(figures, fingerprint, preset):
    chosen, reason = rl.suggest_preset_measured(figures, fingerprint)
    assert chosen == preset
    if "u8u8" in figures:
        assert f"u8s8 {rl.gops(figures['u8s8']):.0f} GOP/s" in reason
        assert f"u8u8 {rl.gops(figures['u8u8']):.0f} GOP/s" in reason
    else:
        assert "flags only" in reason


def test_measured_preset_figures_measure_every_kind_at_one_shape(tmp_path, monkeypatch):
    monkeypatch.setattr(rl, "measure_gemms", _fake_many)
    figures = rl.measured_preset_figures(2, tmp_path, log=lambda _: None)
    assert figures == {kind: 1e9 * (384 + 1536) for kind in GEMM_KINDS}


def test_real_gemm_measurements_have_a_sane_structure():
    shapes = [(kind, 4, 32, 48) for kind in GEMM_KINDS]
    for (kind, m, k, n), ceiling in zip(shapes, rl.measure_gemms(shapes, 1, min_seconds=0.002, repeats=2),
                                        strict=True):
        assert (ceiling.kind, ceiling.m, ceiling.k, ceiling.n, ceiling.threads) == (kind, m, k, n, 1)
        assert ceiling.macs_per_s > 0 and ceiling.seconds_per_call > 0 and ceiling.calls >= rl._NODES_PER_RUN
        assert ceiling.macs_per_s == pytest.approx(m * k * n / ceiling.seconds_per_call)
        assert rl.GemmCeiling.from_dict(ceiling.as_dict()) == ceiling
    assert rl.measure_gemm("u8s8", 2, 16, 16, 1, min_seconds=0.001, repeats=1).kind == "u8s8"
    with pytest.raises(ValueError, match="unknown GEMM kind"):
        rl.measure_gemm("s4s4", 2, 16, 16, 1)


def test_a_refresh_keeps_the_faster_of_the_cached_and_the_new_figure(tmp_path, monkeypatch):
    speeds = iter([2e11, 1e11, 3e11])  # first measurement, a slower one (a busy spell), a faster one

    def measure(shapes, threads, *_args):
        return [rl.GemmCeiling(*shape, threads, macs_per_s=next(speeds), seconds_per_call=1e-4, calls=10)
                for shape in shapes]

    monkeypatch.setattr(rl, "measure_gemms", measure)
    shape = [("fp32", 22, 384, 1536)]
    assert rl.measure_ceilings(shape, 2, tmp_path, log=lambda _: None)[shape[0]].macs_per_s == 2e11
    assert rl.measure_ceilings(shape, 2, tmp_path, log=lambda _: None, refresh=True)[shape[0]].macs_per_s == 2e11
    assert rl.measure_ceilings(shape, 2, tmp_path, log=lambda _: None, refresh=True)[shape[0]].macs_per_s == 3e11
