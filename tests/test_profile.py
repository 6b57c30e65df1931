"""Operator profiles from ONNX Runtime's profiler: real traces of the tiny model (fp32 export and dynamic int8)
for the structure, a hand-built trace for the exact arithmetic. No time is asserted: the machines are noisy."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ortgate.measure.profile import (
    OperatorProfile,
    OpTime,
    ProfileError,
    aggregate_trace,
    diff_profiles,
    profile_session,
    render_profile_markdown,
)

TEXTS = ["a good movie", "a bad and boring film !", "great", "not what i hoped for ."]
INTEGER_MATMULS = {"MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul"}


@pytest.fixture(scope="module")
def export(tiny_model, tmp_path_factory):
    from optimum.onnxruntime import ORTModelForSequenceClassification

    out = tmp_path_factory.mktemp("profile-export")
    ORTModelForSequenceClassification.from_pretrained(tiny_model, export=True).save_pretrained(out)
    return out / "model.onnx"


@pytest.fixture(scope="module")
def int8(export, tmp_path_factory):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = tmp_path_factory.mktemp("profile-int8") / "model.onnx"
    quantize_dynamic(export, out, weight_type=QuantType.QInt8)
    return out


@pytest.fixture(scope="module")
def feeds(tiny_model, export):
    import onnxruntime as ort
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    names = {i.name for i in ort.InferenceSession(str(export), providers=["CPUExecutionProvider"]).get_inputs()}
    return [{k: np.asarray(v, dtype=np.int64) for k, v in tokenizer([text], return_tensors="np").items() if k in names}
            for text in TEXTS]


@pytest.fixture(scope="module")
def profiles(export, int8, feeds, tmp_path_factory):
    work = tmp_path_factory.mktemp("profile-work")
    fp32 = profile_session(export, feeds, threads=1, work_dir=work, label="export", warmup=2)
    quantized = profile_session(int8, feeds, threads=1, work_dir=work, label="int8", warmup=2)
    return fp32, quantized, work


def test_profiling_the_export_accounts_for_every_kernel(profiles, feeds):
    profile, _, work = profiles
    assert profile.graph == "export"
    assert profile.calls == len(feeds)  # the two warm-up calls ran too, and were dropped
    assert "MatMul" in {row.op_type for row in profile.by_op_type}
    assert 0 < profile.node_us_per_call <= profile.run_us_per_call
    assert math.isclose(sum(r.share for r in profile.by_op_type), 1.0, abs_tol=1e-9)
    assert math.isclose(sum(r.share for r in profile.by_node), 1.0, abs_tol=1e-9)
    assert math.isclose(sum(r.us_per_call for r in profile.by_op_type), profile.node_us_per_call)
    for row in profile.by_op_type:
        nodes = [n for n in profile.by_node if n.op_type == row.op_type]
        assert row.name == row.op_type and row.nodes == len(nodes)
        assert math.isclose(row.us_per_call, sum(n.us_per_call for n in nodes))
    assert all(n.nodes == 1 and n.name for n in profile.by_node)
    assert len({n.name for n in profile.by_node}) == len(profile.by_node)
    for rows in (profile.by_op_type, profile.by_node):
        times = [r.us_per_call for r in rows]
        assert times == sorted(times, reverse=True)
    assert not list(work.iterdir())  # the trace files were deleted


def test_int8_brings_integer_kernels_and_fewer_float_matmuls(profiles):
    fp32, quantized, _ = profiles
    diff = diff_profiles(quantized, fp32)
    status = {c.op_type: c.status for c in diff.changes}
    assert status["DynamicQuantizeLinear"] == "new"
    # ORT's optimizer fuses DynamicQuantizeLinear + MatMulInteger into these at the default level.
    new_integer = {op for op in INTEGER_MATMULS if status.get(op) == "new"}
    assert new_integer
    assert all(c.parent_us is None and c.delta_us == c.variant_us for c in diff.changes if c.status == "new")
    before = {r.op_type: r.nodes for r in fp32.by_op_type}
    after = {r.op_type: r.nodes for r in quantized.by_op_type}
    assert after.get("MatMul", 0) < before["MatMul"]  # the dense layers' MatMuls are now integer ones
    assert status["MatMul"] != "new"
    assert {c.op_type for c in diff.changes} == set(before) | set(after)
    deltas = [abs(c.delta_us) for c in diff.changes]
    assert deltas == sorted(deltas, reverse=True)
    assert math.isclose(diff.node_time_ratio, fp32.node_us_per_call / quantized.node_us_per_call)
    text = render_profile_markdown(quantized, diff, top=3)
    for op in new_integer | {"DynamicQuantizeLinear"}:
        assert f"`{op}`" in text  # new op types are shown whatever their rank
    assert "inflated by the profiler" in text and "`int8`" in text and "`export`" in text


def test_profiles_and_diffs_round_trip_through_json(profiles):
    fp32, quantized, _ = profiles
    for profile in profiles[:2]:
        assert OperatorProfile.from_dict(json.loads(json.dumps(profile.as_dict()))) == profile
    data = json.loads(json.dumps(diff_profiles(quantized, fp32).as_dict()))
    assert OperatorProfile.from_dict(data["parent"]) == fp32
    assert {c["status"] for c in data["changes"]} >= {"new"}
    assert all(set(c) == {"op_type", "parent_us", "variant_us", "status", "delta_us"} for c in data["changes"])


def _run(ts, dur):
    return {"cat": "Session", "name": "model_run", "ph": "X", "ts": ts, "dur": dur, "args": {}}


def _node(name, op, ts, dur, index=0, suffix="_kernel_time"):
    return {"cat": "Node", "name": name + suffix, "ph": "X", "ts": ts, "dur": dur,
            "args": {"op_name": op, "provider": "CPUExecutionProvider", "node_index": str(index)}}


def _synthetic_trace():
    """Three calls, the first a warm-up (huge times that must not count), plus the noise a trace carries."""
    events = [
        {"cat": "Session", "name": "session_initialization", "ph": "X", "ts": 0, "dur": 90, "args": {}},
        _run(100, 1000), _node("mm1", "MatMul", 110, 500), _node("", "Add", 700, 300, index=7),
        _run(2000, 100), _node("mm1", "MatMul", 2005, 40), _node("mm2", "MatMul", 2050, 20, index=1),
        _node("mm2", "MatMul", 2049, 3, suffix="_fence_before"), _node("", "Add", 2075, 10, index=7),
        _node("", "Add", 2090, 6, index=9),
        {"cat": "Session", "name": "SequentialExecutor::Execute", "ph": "X", "ts": 2001, "dur": 95, "args": {}},
        _node("stray", "Relu", 2500, 50),  # between calls: no call's kernel
        _run(3000, 80), _node("mm1", "MatMul", 3010, 30), _node("mm2", "MatMul", 3045, 10, index=1),
        _node("", "Add", 3060, 10, index=7), _node("mm2", "MatMul", 3056, 2, suffix="_fence_after"),
    ]
    return events[::-1]  # order must not matter


def test_aggregate_trace_drops_warm_up_calls_and_fences_exactly():
    profile = aggregate_trace(_synthetic_trace(), "v", warmup=1)
    assert profile.calls == 2
    assert profile.run_us_per_call == 90.0
    assert profile.node_us_per_call == (40 + 20 + 10 + 6 + 30 + 10 + 10) / 2 == 63.0
    assert [(r.name, r.op_type, r.us_per_call, r.nodes) for r in profile.by_op_type] == [
        ("MatMul", "MatMul", 50.0, 2), ("Add", "Add", 13.0, 2)]
    assert [r.share for r in profile.by_op_type] == pytest.approx([100 / 126, 26 / 126])
    assert [(n.name, n.op_type, n.us_per_call) for n in profile.by_node] == [
        ("mm1", "MatMul", 35.0), ("mm2", "MatMul", 15.0), ("Add#7", "Add", 10.0), ("Add#9", "Add", 3.0)]
    everything = aggregate_trace(_synthetic_trace(), "v", warmup=0)
    assert everything.calls == 3
    assert everything.by_op_type[0].us_per_call == pytest.approx((500 + 40 + 20 + 30 + 10) / 3)
    assert "Relu" not in {r.op_type for r in everything.by_op_type}


def test_a_trace_without_enough_calls_is_an_error():
    with pytest.raises(ProfileError, match="more calls than warm-up"):
        aggregate_trace(_synthetic_trace(), "v", warmup=3)
    with pytest.raises(ProfileError, match="0 model_run"):
        aggregate_trace([_node("mm1", "MatMul", 10, 5)], "v", warmup=0)


def test_diff_statuses_and_render_without_a_diff():
    def profile(label, **times):
        total = sum(times.values())
        rows = tuple(OpTime(op, op, us, 1, us / total) for op, us in sorted(times.items(), key=lambda kv: -kv[1]))
        return OperatorProfile(label, 3, total, total + 10, rows, rows)

    parent = profile("p", MatMul=100.0, Add=10.0, Gelu=5.0, Relu=50.0, Tanh=1.0)
    variant = profile("v", MatMul=60.0, Add=11.5, Gelu=6.0, Relu=52.0, DynamicQuantizeLinear=8.0)
    diff = diff_profiles(variant, parent)
    assert [(c.op_type, c.status) for c in diff.changes] == [
        ("MatMul", "faster"), ("DynamicQuantizeLinear", "new"), ("Relu", "same"), ("Add", "same"),
        ("Gelu", "same"), ("Tanh", "gone")]  # equal |delta|: by name
    assert diff.changes[0].delta_us == -40.0 and diff.changes[5].delta_us == -1.0
    assert diff_profiles(profile("v", Add=20.0), profile("p", Add=10.0)).changes[0].status == "slower"
    assert diff.node_time_ratio == pytest.approx(166 / 137.5)
    text = render_profile_markdown(variant, diff, top=1)
    assert "`DynamicQuantizeLinear`" in text and "`Tanh`" in text and "| gone |" in text
    assert "3 more op types" in text  # Relu, Add and Gelu: left out, summed
    plain = render_profile_markdown(parent, top=2)
    assert "Parent" not in plain and "`MatMul`" in plain and "3 more op types" in plain
    assert "inflated by the profiler" in plain


def test_profile_session_names_what_is_wrong(export, feeds, tmp_path):
    with pytest.raises(ProfileError, match="no ONNX graph"):
        profile_session(tmp_path / "missing.onnx", feeds, 1, tmp_path, "x")
    with pytest.raises(ProfileError, match="at least one"):
        profile_session(export, [], 1, tmp_path, "x")
    with pytest.raises(ProfileError, match="lacks the inputs"):
        profile_session(export, [{"input_ids": feeds[0]["input_ids"]}], 1, tmp_path / "w", "x")
    assert not list((tmp_path / "w").iterdir())  # profiling was ended and its trace removed


def test_graphs_profiled_in_turn_match_each_graph_profiled_alone(export, int8, feeds, profiles, tmp_path):
    from ortgate.measure.profile import profile_sessions

    fp32_alone, int8_alone, _ = profiles
    together = profile_sessions({"export": (export, feeds), "int8": (int8, feeds)}, threads=1, work_dir=tmp_path)
    for label, alone in (("export", fp32_alone), ("int8", int8_alone)):
        profile = together[label]
        assert profile.graph == label and profile.calls == len(feeds)
        assert {(o.op_type, o.nodes) for o in profile.by_op_type} == {(o.op_type, o.nodes) for o in alone.by_op_type}
        assert 0 < profile.node_us_per_call <= profile.run_us_per_call
    assert list(tmp_path.iterdir()) == []  # both traces read and deleted
    with pytest.raises(ProfileError, match="same number of feeds"):
        profile_sessions({"export": (export, feeds), "int8": (int8, feeds[:1])}, threads=1, work_dir=tmp_path)
