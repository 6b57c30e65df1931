"""The architecture matrix: the suite in this folder, run on a tiny model of every architecture, as a table.

    python benchmarks/architecture_matrix.py [--out ortgate-results/architectures] [--cases bert,mpnet]
                                             [-- extra pytest options, e.g. --ortgate-preset quick]

Each case (an architecture with the tokenizer kind it really uses, a DistilBERT saved with a BERT tokenizer,
a three-class model) gets a tiny model built from a config (`ortgate.sources.tiny_models`, no downloads) and one
`pytest benchmarks` run in its own process, on a small labeled csv. The runs' summary.json files become
`architectures.json` and `architectures.md`: per case and variant, whether it built, passed its accuracy
gate and its structure check, and was timed. The tiny models' speeds and accuracies mean nothing; this
table answers "does every step work on every architecture", which is what tests/test_architectures.py
asserts on the same cases.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from ortgate.sources.tiny_models import MATRIX_CASES, build_tiny_classifier, write_labeled_csv

SUITE = Path(__file__).resolve().parent
SUITE_FILES = ("test_accuracy.py", "test_throughput.py", "test_structure.py")
# Small enough to run every case in minutes; the harness check times 0.3 s rounds and is left out.
FAST = ["--ortgate-bench-samples=4", "--ortgate-bench-rounds=2", "-k", "not harness"]


def suite_args(model: Path, data: Path, num_labels: int) -> list[str]:
    label_map = ["--ortgate-label-map=negative=NEGATIVE,positive=POSITIVE"] if num_labels == 2 else []
    return [f"--ortgate-model={model}", f"--ortgate-dataset={data}", "--ortgate-text-column=review",
            "--ortgate-label-column=sentiment", *label_map, *FAST]


def run_case(case: str, out: Path, extra: list[str]) -> dict:
    _, arch, tokenizer, num_labels = next(c for c in MATRIX_CASES if c[0] == case)
    folder = out / case
    model = build_tiny_classifier(arch, folder / "model", tokenizer=tokenizer, num_labels=num_labels)
    data = write_labeled_csv(folder / "reviews.csv", 48, num_labels, seed=11)
    # The suite runs from a folder of its own: this project's pyproject.toml (tolerances and speed floors for
    # the default model) is not the tiny models' configuration.
    suite = folder / "suite"
    suite.mkdir(exist_ok=True)
    for name in SUITE_FILES:
        (suite / name).write_text((SUITE / name).read_text())
    (suite / "pytest.ini").write_text("[pytest]\n")  # the rootdir: pytest would otherwise find ours upward
    started = time.perf_counter()
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
               *suite_args(model, data, num_labels), f"--ortgate-cache-dir={out / 'cache'}",
               f"--ortgate-results-dir={folder / 'results'}", f"--ortgate-structure-dir={folder / 'structure'}",
               f"--junitxml={folder / 'junit.xml'}", *extra]
    done = subprocess.run(command, capture_output=True, text=True, cwd=suite)
    (folder / "pytest.log").write_text(done.stdout + done.stderr)
    summary_path = folder / "results" / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    return {"case": case, "architecture": arch, "tokenizer": tokenizer or arch, "labels": num_labels,
            "exit_code": done.returncode, "seconds": round(time.perf_counter() - started, 1),
            "outcome": done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "",
            "variants": [_cell(row) for row in summary["variants"]] if summary else []}


def _cell(row: dict) -> dict:
    if row.get("build") in ("build failed", "not applicable"):
        return {"variant": row["variant"], "verdict": row["build"], "reason": row.get("build_error")}
    structure = row.get("structure")
    problems = [] if structure is None or structure["passed"] else structure["problems"]
    gate = row.get("gate")
    verdict = "pass" if gate in ("pass", "baseline") and not problems else "FAIL"
    return {"variant": row["variant"], "verdict": verdict, "gate": gate, "structure_problems": problems,
            "accuracy": row.get("accuracy"), "timed": "samples_per_s" in row or bool(row.get("same_graph_as"))}


def markdown(results: list[dict]) -> str:
    variants = list(dict.fromkeys(v["variant"] for r in results for v in r["variants"]))
    lines = ["| case | tokenizer | labels | " + " | ".join(variants) + " | run |",
             "|---|---|---|" + "---|" * len(variants) + "---|"]
    for r in results:
        cells = {v["variant"]: v for v in r["variants"]}
        shown = []
        for vid in variants:
            cell = cells.get(vid)
            if cell is None:
                shown.append("")
            elif cell["verdict"] == "pass":
                shown.append("✓" if cell.get("timed") else "✓ (not timed)")
            elif cell["verdict"] == "FAIL":
                shown.append(f"FAIL: gate {cell['gate']}; " + "; ".join(cell["structure_problems"]))
            else:
                shown.append(f"{cell['verdict']}: {cell.get('reason')}")
        lines.append(f"| {r['architecture'] if r['case'] == r['architecture'] else r['case']} | {r['tokenizer']} | "
                     f"{r['labels']} | " + " | ".join(shown) + f" | {_counts(r['outcome'])} |")
    return "\n".join(lines) + "\n"


def _counts(outcome: str) -> str:
    """pytest's last line without the timing and warnings: `45 passed, 6 skipped, 1 deselected`."""
    return re.sub(r"(, \d+ warnings?)? in [\d.]+s.*$", "", outcome.strip("= "))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("ortgate-results/architectures"))
    parser.add_argument("--cases", help="comma-separated case ids (default: all: "
                        f"{', '.join(c[0] for c in MATRIX_CASES)})")
    args = parser.parse_args(argv)
    cases = args.cases.split(",") if args.cases else [c[0] for c in MATRIX_CASES]
    unknown = sorted(set(cases) - {c[0] for c in MATRIX_CASES})
    if unknown:
        parser.error(f"unknown case(s) {unknown}")
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for number, case in enumerate(cases, 1):
        print(f"[{number}/{len(cases)}] {case} ...", flush=True)
        results.append(run_case(case, args.out.resolve(), extra))
        print(f"    exit {results[-1]['exit_code']} in {results[-1]['seconds']}s: {results[-1]['outcome']}", flush=True)
    (args.out / "architectures.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "architectures.md").write_text(markdown(results))
    print(markdown(results))
    print(f"written: {args.out / 'architectures.json'}  {args.out / 'architectures.md'}")
    return 0 if all(r["exit_code"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
