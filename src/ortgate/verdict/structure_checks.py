"""The run's structure checks: each variant's graph read once, against the rules of its definition and the
model's type, and against the structure recorded for this model (`verdict.structure` holds the rules)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ortgate.build.builder import library_versions
from ortgate.build.graph import graph_summary
from ortgate.build.plan import BuildPlan
from ortgate.spec.variants import BASELINE_ID
from ortgate.verdict.structure import (
    StructureCheck,
    StructureRecords,
    layout_rewritten_nodes,
    rule_notes,
    rule_problems,
)


@dataclass
class StructureChecks:
    plan: BuildPlan
    records: StructureRecords
    model_type: str | None
    int8_min_weight_share: float = 0.99
    update: bool = False
    checks: dict[str, StructureCheck] = field(default_factory=dict)
    _graphs: dict[str, dict | None] = field(default_factory=dict)

    def graph(self, variant_id: str) -> dict | None:
        """What the variant's graph contains, with its differences from the plain export (read once)."""
        if variant_id not in self._graphs:
            if variant_id == BASELINE_ID:
                self._graphs[variant_id] = None
            else:
                root = self.plan.variants.chain(variant_id)[0].id
                export = None if root == variant_id else self.graph(root)
                self._graphs[variant_id] = graph_summary(self.plan.built(variant_id).onnx_path, export)
        return self._graphs[variant_id]

    def check(self, variant_id: str) -> StructureCheck:
        """The variant's graph against the rules of its definition and the recorded expected structure."""
        if variant_id not in self.checks:
            from ortgate.isa import cpu_fingerprint, fingerprint_id

            variants = self.plan.variants
            built, graph = self.plan.built(variant_id), self.graph(variant_id)
            fp32 = variants.fp32_ancestor(variant_id)
            export = self.graph(variants.chain(variant_id)[0].id)
            problems = rule_problems(variants, variant_id, graph, self.graph(fp32) if fp32 else None,
                                     self.model_type, built.metadata.get("operators_quantized"),
                                     self.int8_min_weight_share, export)
            key, other_cpus_of = variant_id, None
            if variants.hardware_specific(variant_id):  # recorded per CPU; other CPUs' records still apply in part
                other_cpus_of = f"{variant_id}@"
                key = other_cpus_of + fingerprint_id(cpu_fingerprint())
            found = self.records.check(key, graph, variants.content_hash(variant_id), library_versions(),
                                       update=self.update, other_cpus_of=other_cpus_of,
                                       layout_nodes=layout_rewritten_nodes(export))
            self.checks[variant_id] = StructureCheck(variant_id, tuple(problems + found.problems),
                                                     tuple(rule_notes(graph) + found.notes), found.record,
                                                     found.unchecked)
        return self.checks[variant_id]
