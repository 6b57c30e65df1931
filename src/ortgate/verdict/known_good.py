"""Whether a variant that fails to build fails its tests or is an expected failure.

A variant known to build that no longer does is a regression (a library upgrade, a changed model), and its
tests fail, naming the failing step and its error; one never seen to build is an expected failure (xfail)
unless --ortgate-strict. Known to build means:
- its expected structure is recorded for this model, with the variant's current definition, on any CPU
  (`--ortgate-structure-dir`, committed like a benchmark baseline): it built when it was recorded;
- or it built (or came from the cache) in the run the user names with `--ortgate-known-good` (a summary.json
  or pytest-benchmark JSON; `record.known_good` reads it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ortgate.build.plan import FailedStep
from ortgate.spec.variants import VariantSet


@dataclass(frozen=True)
class KnownGood:
    """The evidence that variants built before: variant id -> where each was seen to build."""

    seen: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    looked_in: tuple[str, ...] = ()  # where the evidence was sought, for the message of a variant never seen

    def __add__(self, other: KnownGood) -> KnownGood:
        seen = {vid: self.seen.get(vid, ()) + other.seen.get(vid, ()) for vid in {**self.seen, **other.seen}}
        return KnownGood(seen, self.looked_in + other.looked_in)


@dataclass(frozen=True)
class BuildVerdict:
    expected: bool  # True: an expected failure (xfail); False: the variant's tests fail
    message: str


def known_good_from_structures(records: Mapping[str, dict], where: str, variants: VariantSet) -> KnownGood:
    """The variants with an expected structure in `records` (`StructureRecords.load()`: `<variant>` or
    `<variant>@<cpu id>` -> record), each recorded with the variant's current definition (its step hash)."""
    seen: dict[str, tuple[str, ...]] = {}
    for key, record in records.items():
        variant_id, _, cpu = key.partition("@")
        if variant_id not in variants.specs or record.get("step_hash") != variants.content_hash(variant_id):
            continue  # not a variant of this run, or another definition under its id
        seen[variant_id] = seen.get(variant_id, ()) + (
            f"its structure is recorded in {where}" + (f" for CPU {cpu}" if cpu else "")
            + f" ({record.get('recorded')}, onnxruntime {record.get('versions', {}).get('onnxruntime')})",)
    return KnownGood(seen, (f"the expected structure in {where}",))


def build_failure_verdict(variant_id: str, reason: str | None, failed: FailedStep | None, known: KnownGood,
                          strict: bool) -> BuildVerdict:
    """Fail (known to build, or --ortgate-strict) or expected failure (never seen to build), and why."""
    where = f" at {failed}" if failed else ""
    error = failed.error if failed else reason
    evidence = known.seen.get(variant_id, ())
    if evidence:
        return BuildVerdict(False, f"{variant_id} built before ({'; '.join(evidence)}) and now fails to build{where}: "
                            f"{error}. A variant known to build must keep building; if it is no longer meant to, "
                            "remove it from the matrix, or its entry from the expected structure")
    never = "never seen to build (" + (f"not in {' nor in '.join(known.looked_in)}" if known.looked_in else
                                       "no evidence sought") + ")"
    head = f"{variant_id} build failed: {reason}" + (f" ({where.strip()})" if failed else "")
    if strict:
        return BuildVerdict(False, f"{head}; {never}; it fails under --ortgate-strict")
    return BuildVerdict(True, f"{head}; {never}, so an expected failure (a variant known to build would fail)")
