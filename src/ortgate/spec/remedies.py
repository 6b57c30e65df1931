"""Repair candidates: the known remedies for a quantized variant that fails its accuracy gate, as variant specs.

Pure: a failing variant's spec (and, for the last two remedies, what a diagnosis ranked worst) in, candidate specs
out. `diagnose.repair` builds, evaluates and times them. Each candidate changes one thing of the failing step:

  per-channel       weights scaled per output channel instead of per tensor
  reduce-range      7-bit weights: u8 x u8 products cannot saturate the 16-bit accumulators of AVX2/AVX-512
                    without VNNI (the avx2 preset's weights are u8)
  calibration       static only: another calibration method (percentile clips outliers; entropy minimizes the
                    KL divergence), or four times the calibration rows (as many as the data holds out)
  operators         a narrower operator list: MatMul only (where the speed is), or the list without the operator
                    type the diagnosis found worst
  <preset>-preset   the ISA preset this CPU's flags point to (e.g. avx512_vnni: s8 weights, which VNNI multiplies
                    without saturating; the avx2 preset's u8 weights run the slower u8 x u8 kernels)
  a+b(+c...)        the ones above that helped (accuracy closer, or clearly faster), two or more together
                    (round 2)
  exclude-N         the N worst nodes of the diagnosis kept in fp32 (nodes_to_exclude), N = 1, 2, 4, ...: the
                    fallback, grown until the gate passes (round 3)
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace

from ortgate.spec.variants import CALIBRATION_METHODS, Quantize, VariantSpec

REPAIR_MARK = "+"  # candidate ids: <failing variant>+<remedy>
EXCLUSION_SIZES = (1, 2, 4, 8, 16, 32, 64, 128)
MORE_CALIBRATION_ROWS = 4  # the calibration remedy's factor on the rows
MAX_COMBINATIONS = 16  # round 2's candidates at most


def entry_id(candidate_id: str) -> str:
    """The id a kept candidate gets in its `[tool.ortgate.variants.<id>]` entry: the repair marks spelled as a TOML
    bare key allows (`v+a+b` -> `v-repaired-a-and-b`)."""
    return candidate_id.replace(REPAIR_MARK, "-repaired-", 1).replace(REPAIR_MARK, "-and-")


@dataclass(frozen=True)
class Remedy:
    """One change to a quantization step: its slug (in the candidate's id), the fields it sets, what it is."""

    slug: str
    changes: tuple[tuple[str, object], ...]
    description: str

    def applied(self, step: Quantize) -> Quantize:
        return replace(step, **dict(self.changes))


@dataclass(frozen=True)
class Candidate:
    """One candidate of a repair: the variant spec, which remedy it applies, and the search round it belongs to
    (1: the single remedies; 2: two helpful remedies together; 3: the growing fp32 fallback, stopped at the first
    pass)."""

    spec: VariantSpec
    remedy: str
    round: int
    fix: Remedy | None = None  # rounds 1 and 2: the change, which round 2 combines

    @property
    def id(self) -> str:
        return self.spec.id


def _remedy(slug: str, description: str, **changes) -> Remedy:
    return Remedy(slug, tuple(sorted(changes.items())), description)


def remedies_for(step: Quantize, quantized_operators: Sequence[str] | None = None, worst_operator: str | None = None,
                 calibration_rows: int | None = None, cpu_preset: str | None = None) -> list[Remedy]:
    """Each single remedy that changes something in `step`, in the order tried.

    `quantized_operators`: the operator types the build asked to quantize (its manifest), to narrow the list;
    `worst_operator`: the quantized operator type whose nodes added the most noise in the diagnosis;
    `calibration_rows`: the held-out rows there are (None: as many as asked), so more rows are offered only where
    they exist; `cpu_preset`: the ISA preset this CPU points to (`isa.suggest_preset`), offered when it differs."""
    out: list[Remedy] = []
    if not step.per_channel:
        out.append(_remedy("per-channel", "per-channel weights", per_channel=True))
    if not step.reduce_range:
        out.append(_remedy("reduce-range", "reduce_range (7-bit weights)", reduce_range=True))
        if not step.per_channel:
            out.append(_remedy("per-channel-reduce-range", "per-channel weights and reduce_range", per_channel=True,
                               reduce_range=True))
    if cpu_preset and cpu_preset != step.isa:
        out.append(_remedy(f"{cpu_preset}-preset", f"the {cpu_preset} preset (this CPU's int8 path)", isa=cpu_preset))
    if step.mode == "static":
        for method in CALIBRATION_METHODS:
            if method != step.calibration:
                out.append(_remedy(f"{method}-calibration", f"{method} calibration on {step.calibration_samples} rows",
                                   calibration=method))
        more = step.calibration_samples * MORE_CALIBRATION_ROWS
        more = more if calibration_rows is None else min(more, calibration_rows)
        if more > step.calibration_samples:
            out.append(_remedy(f"calibration-{more}", f"{step.calibration} calibration on {more} rows",
                               calibration_samples=more))
    operators = list(quantized_operators or ())
    if operators != ["MatMul"] and (not operators or "MatMul" in operators):
        out.append(_remedy("matmul-only", "operators: MatMul only", operators=("MatMul",)))
    if worst_operator and worst_operator in operators and len(operators) > 2:
        narrower = tuple(o for o in operators if o != worst_operator)
        out.append(_remedy(f"without-{worst_operator}", f"operators without {worst_operator} (the worst type in the "
                           "diagnosis)", operators=narrower))
    return out


def _candidate(failing: VariantSpec, remedy: Remedy, round_: int) -> Candidate:
    spec = VariantSpec(f"{failing.id}{REPAIR_MARK}{remedy.slug}", failing.parent, remedy.applied(failing.step),
                       f"repair of {failing.id}: {remedy.description}")
    return Candidate(spec, remedy.description, round_, remedy)


def remedy_candidates(failing: VariantSpec, quantized_operators: Sequence[str] | None = None,
                      worst_operator: str | None = None, calibration_rows: int | None = None,
                      cpu_preset: str | None = None) -> list[Candidate]:
    """Round 1: one candidate per single remedy (`remedies_for`)."""
    if not isinstance(failing.step, Quantize):
        raise ValueError(f"{failing.id} is not quantized; only a quantized variant has remedies")
    remedies = remedies_for(failing.step, quantized_operators, worst_operator, calibration_rows, cpu_preset)
    return [_candidate(failing, remedy, 1) for remedy in remedies]


def combined_candidates(failing: VariantSpec, helpful: Sequence[Remedy], known: Sequence[Quantize] = (),
                        limit: int = MAX_COMBINATIONS) -> list[Candidate]:
    """Round 2: the `helpful` remedies (those that brought the accuracy closer or the speed up) together, two at a
    time, then three, ... (at most `limit`), where they set no field differently and write a step not tried yet
    (`known`): the CPU's own preset (faster) with per-channel weights and MatMul only (closer) may pass at the
    preset's speed where none of them does alone."""
    out, seen = [], set(known)
    for size in range(2, len(helpful) + 1):
        for group in itertools.combinations(helpful, size):
            changes: dict = {}
            if any(changes.setdefault(k, v) != v for remedy in group for k, v in remedy.changes):
                continue
            remedy = Remedy("+".join(r.slug for r in group), tuple(sorted(changes.items())),
                            ", and ".join(r.description for r in group))
            step = remedy.applied(failing.step)
            if step not in seen and len(out) < limit:
                seen.add(step)
                out.append(_candidate(failing, remedy, 2))
    return out


def exclusion_names(node: str, op_type: str) -> tuple[str, ...]:
    """The names `nodes_to_exclude` must give to keep a parent-graph node in fp32. ONNX Runtime's quantizer first
    rewrites a Gemm as a MatMul named `<gemm>_MatMul` (plus an Add) and quantizes that MatMul: both names are given."""
    return (node, f"{node}_MatMul") if op_type == "Gemm" else (node,)


def exclusion_candidates(base: VariantSpec, ranked_nodes: Sequence[str | tuple[str, ...]],
                         sizes: Sequence[int] = EXCLUSION_SIZES, base_remedy: str | None = None) -> list[Candidate]:
    """Round 3: `base`'s step with the worst 1, 2, 4, ... of `ranked_nodes` (worst first; each a parent-graph node
    name, or the names `exclusion_names` gives for one node) kept in fp32, up to all of them. `base` is the failing
    variant or the candidate that came closest."""
    step = base.step
    if not isinstance(step, Quantize):
        raise ValueError(f"{base.id} is not quantized")
    nodes = list(dict.fromkeys((n,) if isinstance(n, str) else tuple(n) for n in ranked_nodes))
    counts = sorted({min(n, len(nodes)) for n in sizes} | {len(nodes)}) if nodes else []  # ends with all of them
    failing_id, _, slug = base.id.partition(REPAIR_MARK)
    prefix = f"{slug}+" if slug else ""
    then = f"{base_remedy}, and " if base_remedy else ""
    out = []
    for n in counts:
        names = (name for node in nodes[:n] for name in node)
        excluded = tuple(dict.fromkeys((*(step.nodes_to_exclude or ()), *names)))
        spec = VariantSpec(f"{failing_id}{REPAIR_MARK}{prefix}exclude-{n}", base.parent,
                           replace(step, nodes_to_exclude=excluded),
                           f"repair of {failing_id}: {then}the {n} worst node{'s' if n > 1 else ''} kept in fp32")
        out.append(Candidate(spec, f"{then}fp32 fallback of the {n} worst node{'s' if n > 1 else ''}", 3))
    return out
