"""Repair: the remedies a failing quantized spec gets, the entry that rebuilds a candidate, and the search on a real
tiny model (built, evaluated and timed for real; no time is asserted)."""

import tomllib
from dataclasses import replace

import pytest

from ortgate.errors import ConfigError
from ortgate.spec.matrix import full, reference
from ortgate.spec.remedies import (
    REPAIR_MARK,
    combined_candidates,
    exclusion_candidates,
    exclusion_names,
    remedies_for,
    remedy_candidates,
)
from ortgate.spec.variants import Quantize, VariantSpec, format_entry, parse_matrix


def _spec(**step) -> VariantSpec:
    fields = {"mode": "dynamic", "isa": "avx2", "per_channel": False, **step}
    return VariantSpec("q", "O99", Quantize(**fields))


def test_a_per_tensor_dynamic_spec_gets_every_remedy_that_changes_it():
    candidates = remedy_candidates(_spec(), ["MatMul", "Attention", "Gather"], worst_operator="Gather",
                                   cpu_preset="avx512_vnni")
    slugs = [c.id.split(REPAIR_MARK)[1] for c in candidates]
    assert slugs == ["per-channel", "reduce-range", "per-channel-reduce-range", "avx512_vnni-preset", "matmul-only",
                     "without-Gather"]
    assert candidates[3].spec.step.isa == "avx512_vnni"
    by_slug = dict(zip(slugs, candidates, strict=True))
    assert by_slug["per-channel"].spec.step.per_channel and not by_slug["per-channel"].spec.step.reduce_range
    assert by_slug["without-Gather"].spec.step.operators == ("MatMul", "Attention")
    assert {c.spec.parent for c in candidates} == {"O99"} and {c.round for c in candidates} == {1}


def test_a_static_spec_also_gets_other_calibrations_and_more_rows():
    step = {"mode": "static", "isa": "arm64", "per_channel": True, "reduce_range": True, "operators": ("MatMul",),
            "calibration": "minmax", "calibration_samples": 128}
    slugs = [c.id.split(REPAIR_MARK)[1] for c in remedy_candidates(_spec(**step), ["MatMul"])]
    assert slugs == ["entropy-calibration", "percentile-calibration", "calibration-512"]
    held_out = [c.id.split(REPAIR_MARK)[1] for c in remedy_candidates(_spec(**step), ["MatMul"], calibration_rows=300)]
    assert held_out[-1] == "calibration-300"
    assert "calibration-128" not in str(remedy_candidates(_spec(**step), ["MatMul"], calibration_rows=128))


def test_the_fallback_grows_the_excluded_nodes_up_to_all_of_them():
    nodes = [f"n{i}" for i in range(5)]
    candidates = exclusion_candidates(_spec(), nodes)
    assert [c.spec.step.nodes_to_exclude for c in candidates] == [
        ("n0",), ("n0", "n1"), ("n0", "n1", "n2", "n3"), tuple(nodes)]
    assert len({c.id for c in candidates}) == 4 and {c.round for c in candidates} == {3}
    assert exclusion_candidates(_spec(), []) == []
    gemm = exclusion_candidates(_spec(), [exclusion_names("/classifier/Gemm", "Gemm")], sizes=(1,))
    assert gemm[0].spec.step.nodes_to_exclude == ("/classifier/Gemm", "/classifier/Gemm_MatMul")
    with pytest.raises(ValueError, match="not quantized"):
        remedy_candidates(reference().specs["O99"])


@pytest.mark.parametrize("preset", [reference, full], ids=["reference", "full"])
def test_every_entry_reads_back_as_the_same_spec(preset):
    for spec in preset().specs.values():
        if spec.step is None or spec.step.kind == "export":
            continue
        doc = tomllib.loads(format_entry(spec))
        assert parse_matrix(doc["tool"]["ortgate"]["variants"], "tool.ortgate.variants")[spec.id] == spec


def test_an_entry_with_excluded_nodes_and_a_quoted_id_reads_back():
    nodes = tuple(f"/bert/encoder/layer.{i}/MatMul" for i in range(4))
    spec = replace(_spec(reduce_range=True, nodes_to_exclude=nodes), id="q+exclude-4")
    doc = tomllib.loads(format_entry(spec))
    assert parse_matrix(doc["tool"]["ortgate"]["variants"], "x")["q+exclude-4"] == spec


@pytest.mark.parametrize(("field", "value", "message"), [
    ("nodes_to_exclude", [], "non-empty list of node names"),
    ("nodes_to_exclude", "MatMul_1", "non-empty list of node names"),
    ("reduce_range", "yes", "true or false"),
])
def test_bad_new_quantize_fields_name_the_field(field, value, message):
    entry = {"parent": "O99", "quantize": {"mode": "dynamic", "isa": "arm64", "per_channel": False, field: value}}
    with pytest.raises(ConfigError, match=f"field 'quantize.{field}'.*{message}"):
        parse_matrix({"v": entry}, "tool.ortgate.variants")


# ------------------------------------------------------------------ the search, on a real tiny model

@pytest.fixture(scope="module")
def fragile_session(fragile, tmp_path_factory):
    from ortgate.session import RunSession
    from ortgate.spec.settings import resolve_settings

    model, data = fragile
    root = tmp_path_factory.mktemp("repair")
    settings = resolve_settings({"model": str(model), "dataset": str(data), "cache_dir": str(root / "cache"),
                                 "tolerance": "0pp", "threads": "1", "bench_samples": "16"}, {}, root)
    session = RunSession(settings, log=lambda message: None,
                         planned_ids=["pytorch", "onnx", "O99", "static-int8", "O99-dynamic-int8-arm64"])
    session.prepare()
    return session


def _repairer(session, remedies: bool = True):
    from ortgate.diagnose.explain import Explainer
    from ortgate.diagnose.repair import Repairer

    s, data = session.settings, session.data
    explainer = Explainer(session.plan, data.calibration_texts, data.texts[:16], 1, rows=16, log=lambda m: None)
    return Repairer(session.plan, session.evaluator, explainer, s.tolerance, data.texts[:16], cycles=3,
                    log=lambda m: None, remedies=remedies)


@pytest.fixture(scope="module")
def repaired(fragile_session):
    repairer = _repairer(fragile_session)
    return repairer, repairer.repair("static-int8")


@pytest.fixture(scope="module")
def fell_back(fragile_session):
    repairer = _repairer(fragile_session, remedies=False)
    return repairer, repairer.repair("O99-dynamic-int8-arm64")


@pytest.mark.parametrize("which", ["repaired", "fell_back"])
def test_pairs_combine_helpful_remedies_and_the_fallback_stops_at_its_first_pass(which, request):
    repairer, result = request.getfixturevalue(which)
    assert not result.original.passed and result.original.accuracy_delta_pp < 0
    rounds = [o.round for o in result.tried]
    assert rounds == sorted(rounds)
    singles = {o.candidate.fix.slug: o for o in result.tried if o.round == 1}
    helped = {slug for slug, o in singles.items() if repairer.helped(o, result.original)}
    for combo in (o for o in result.tried if o.round == 2):  # combinations of remedies that helped, only
        assert set(combo.candidate.fix.slug.split("+")) <= helped
    if any(o.passed for o in result.tried if o.round < 3):
        assert 3 not in rounds  # no fp32 fallback once something passed
    fallback = [o.passed for o in result.tried if o.round == 3]
    if fallback:  # the growing fallback stops at its first pass
        assert fallback == [False] * (len(fallback) - 1) + [True]
    assert result.chosen is not None and result.chosen.passed
    timed = [o for o in (result.original, *result.tried) if o.built]
    assert all(o.speed is not None and o.speed.reference_id == result.parent_id and o.speed.rounds == 3 for o in timed)
    fastest = max(result.passing, key=lambda o: o.speed.ratio)
    assert result.chosen.speed.ratio >= fastest.speed.interval[0]  # as fast as the fastest, as far as it tells
    as_fast = [o for o in result.passing if o.speed.ratio >= fastest.speed.interval[0]]
    assert result.changes(result.chosen) == min(result.changes(o) for o in as_fast)


def test_combinations_join_the_remedies_that_helped_two_then_three_at_a_time():
    step = _spec().step
    helpful = [r for r in remedies_for(step, ["MatMul", "Attention", "Gather"], "Gather", cpu_preset="arm64")
               if r.slug in ("per-channel", "reduce-range", "arm64-preset", "matmul-only", "without-Gather")]
    combos = combined_candidates(_spec(), helpful, known=[], limit=100)
    slugs = [c.id.split(REPAIR_MARK, 1)[1] for c in combos]
    assert slugs[:3] == ["per-channel+reduce-range", "per-channel+arm64-preset", "per-channel+matmul-only"]
    assert "matmul-only+without-Gather" not in slugs  # both set the operators: never together
    assert "per-channel+arm64-preset+matmul-only" in slugs and {c.round for c in combos} == {2}
    triple = combos[slugs.index("per-channel+arm64-preset+matmul-only")].spec.step
    assert triple == replace(step, per_channel=True, isa="arm64", operators=("MatMul",))
    tried = [replace(step, per_channel=True, reduce_range=True)]
    assert len(combined_candidates(_spec(), helpful, known=tried, limit=100)) == len(combos) - 1  # not tried twice
    assert len(combined_candidates(_spec(), helpful, limit=4)) == 4


def test_the_fallback_keeps_the_worst_nodes_in_fp32_until_the_gate_passes(fell_back):
    _, fell_back = fell_back
    assert [o.round for o in fell_back.tried] == [3] * len(fell_back.tried)
    assert [o.passed for o in fell_back.tried] == [False] * (len(fell_back.tried) - 1) + [True]
    ranked = [name for n in fell_back.diagnoses["O99-dynamic-int8-arm64"].worst(10_000, quantized_only=True)
              for name in exclusion_names(n.node, n.op_type)]
    last = fell_back.tried[-1].spec.step.nodes_to_exclude
    assert list(last) == ranked[: len(last)]  # the worst of the ranking, in its order


def test_the_printed_entry_rebuilds_the_same_graph(repaired, fragile, tmp_path):
    from ortgate.report.repair import render_markdown, toml_entry
    from ortgate.session import RunSession
    from ortgate.spec.settings import read_pyproject, resolve_settings

    _, result = repaired
    entry = toml_entry(result.chosen)
    assert entry in render_markdown(result).replace("```toml\n", "") + "\n"
    (tmp_path / "pyproject.toml").write_text(entry)
    model, data = fragile
    settings = resolve_settings({"model": str(model), "dataset": str(data), "cache_dir": str(tmp_path / "fresh")},
                                read_pyproject(tmp_path), tmp_path)
    (vid,) = settings.user_variant_ids
    session = RunSession(settings, log=lambda message: None, planned_ids=["pytorch", vid])
    built = session.plan.built(vid)
    assert not built.cache_hit  # rebuilt from the entry, in an empty cache
    assert built.graph_sha256 == result.chosen.sha256


def test_a_graph_that_passes_already_is_refused(repaired):
    repairer, _ = repaired
    with pytest.raises(ConfigError, match="passes its gate already"):
        repairer.check_failing("onnx", repairer.gates_for("onnx"))


def test_the_pareto_plot_and_files_are_written(repaired, tmp_path):
    from ortgate.report.repair import pareto_front, write_repair

    _, result = repaired
    paths = write_repair(result, tmp_path / "out")
    assert paths["plot"].stat().st_size > 10_000 and paths["entry"].read_text().startswith("[tool.ortgate.variants.")
    front = pareto_front([result.original, *result.tried])
    assert result.chosen in front or any(o.accuracy_delta_pp >= result.chosen.accuracy_delta_pp
                                         and o.speed.ratio >= result.chosen.speed.ratio for o in front)


@pytest.mark.parametrize(("argv", "message"), [
    (["repair", "nosuch"], "there is no variant 'nosuch' in this matrix; it takes a quantized variant: dynamic-int8, "),
    (["diagnose", "O99"], "'O99' is not quantized (nothing was rounded to int8); it takes a quantized variant: "),
    (["repair", "pytorch"], "'pytorch' is the PyTorch baseline, not an ONNX graph; it takes: dynamic-int8"),
    (["profile", "nosuch"], "there is no variant 'nosuch' in this matrix; it takes an ONNX variant: onnx, O99, "),
    (["repair", "dynamic-int8"], "'dynamic-int8' passes its gate already"),
    (["diagnose", "dynamic-int8"], "'dynamic-int8' passes its gate (+0.00pp drop within 1pp); pass --any"),
])
def test_bad_input_is_refused_in_one_line_naming_what_it_takes(argv, message, fragile, tmp_path, monkeypatch, capsys):
    from ortgate.cli import main

    monkeypatch.chdir(tmp_path)
    model, data = fragile
    code = main([*argv, "--model", str(model), "--dataset", str(data), "--cache-dir", str(tmp_path / "cache"),
                 "--threads", "1"])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("ortgate: ") and message in last, last


def test_profile_and_diagnose_commands_print_and_write_json(fragile, tmp_path, monkeypatch, capsys):
    import json

    from ortgate.cli import main

    monkeypatch.chdir(tmp_path)
    model, data = fragile
    common = ["--model", str(model), "--dataset", str(data), "--cache-dir", str(tmp_path / "cache"), "--threads", "1",
              "--tolerance", "0pp"]
    assert main(["profile", "O99-dynamic-int8-arm64", "--calls", "4", "--json", str(tmp_path / "p.json"), *common]) == 0
    out = capsys.readouterr().out
    profile = json.loads((tmp_path / "p.json").read_text())
    assert profile["parent"]["graph"] == "O99" and profile["variant"]["calls"] == 4
    new = {c["op_type"] for c in profile["changes"] if c["status"] == "new"}
    assert "DynamicQuantizeLinear" in new and all(f"`{op}`" in out for op in new)
    assert main(["diagnose", "O99-dynamic-int8-arm64", "--rows", "8", "--json", str(tmp_path / "d.json"), *common]) == 0
    out = capsys.readouterr().out
    diagnosis = json.loads((tmp_path / "d.json").read_text())
    assert diagnosis["parent"] == "O99" and diagnosis["rows"] == 8
    assert diagnosis["nodes"][0]["node"] in out and "against O99" in out


def test_the_fallback_ends_with_every_ranked_node_however_many():
    nodes = [f"n{i}" for i in range(200)]
    counts = [len(c.spec.step.nodes_to_exclude) for c in exclusion_candidates(_spec(), nodes)]
    assert counts == [1, 2, 4, 8, 16, 32, 64, 128, 200]
