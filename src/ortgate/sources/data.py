"""Labeled evaluation data: the default VADER Amazon snippets, or the user's file, folder or hub set.

Everything ends as `EvalData`: evaluation texts with label ids in the model's own label space, plus
calibration texts for static quantization, always drawn from rows the evaluation does not use.
"""

from __future__ import annotations

import io
import re
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ortgate.errors import DataError, first_line
from ortgate.files import json_digest
from ortgate.sources import pypi

DEFAULT_EVAL_ROWS = 3000
DEFAULT_CALIBRATION_ROWS = 128
VADER_MEMBER = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
VADER_CORPORA = ("amazonReviewSnippets", "movieReviewSnippets", "tweets", "nytEditorialSnippets")
FILE_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
_SLICE = re.compile(r"^(?P<name>[\w.-]*)(?P<slice>\[.*\])?$")


@dataclass(frozen=True)
class EvalData:
    texts: list[str]
    labels: np.ndarray  # label ids of the model (id2label keys)
    calibration_texts: list[str]
    source: str

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError("texts and labels differ in length")

    @property
    def fingerprint(self) -> str:
        """sha256 of the evaluation rows (texts, labels) and the calibration texts: the same data, row for row."""
        return json_digest({"texts": self.texts, "labels": [int(x) for x in self.labels],
                            "calibration": self.calibration_texts})


# ---------------------------------------------------------------- text and labels


def combine_text(title: object, content: object) -> str:
    """Join title and content the reference's way: the title ends a sentence, content follows."""
    title_s = "" if title is None else str(title).strip()
    content_s = "" if content is None else str(content).strip()
    if title_s and not title_s.endswith((".", "!", "?")):
        title_s += "."
    return f"{title_s} {content_s}".strip() if content_s else title_s


def _label_key(value: object) -> str:
    # 1, 1.0 and "1" name the same class in csv/json/parquet files alike.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def to_label_ids(
    values: Sequence[object], id2label: Mapping[int, str], label_map: Mapping[str, str] | None
) -> np.ndarray:
    """Map dataset label values to the model's label ids, or say which values have no mapping."""
    label2id = {name: i for i, name in id2label.items()}
    if label_map is None:
        by_name = {name.lower(): i for name, i in label2id.items()}
        mapping = {str(i): i for i in id2label} | {name: i for name, i in by_name.items()}
        lookup = lambda key: mapping.get(key, mapping.get(key.lower()))  # noqa: E731
        how = f"the model's id2label {dict(id2label)} (ids or names)"
    else:
        # A target is a label name (POSITIVE, any case) or a class id (1): models with LABEL_0/LABEL_1 are often
        # mapped by id. A name wins over an id: a rating model's class named "1" is not class id 1.
        targets = {str(i): i for i in id2label} | {n.lower(): i for n, i in label2id.items()} | label2id
        def resolve(target: str) -> int | None:
            return targets.get(target, targets.get(target.lower()))

        unknown_targets = sorted(t for t in set(label_map.values()) if resolve(t) is None)
        if unknown_targets:
            raise DataError(
                f"--ortgate-label-map maps to {unknown_targets}, which are not labels of the model; "
                f"the model's labels are {sorted(label2id)} (or their ids {sorted(id2label)})"
            )
        lookup = lambda key: resolve(label_map[key]) if key in label_map else None  # noqa: E731
        how = f"--ortgate-label-map {dict(label_map)}"
    keys = [_label_key(v) for v in values]
    ids = [lookup(k) for k in keys]
    missing = sorted({k for k, i in zip(keys, ids, strict=True) if i is None})
    if missing:
        shown = ", ".join(repr(m) for m in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise DataError(
            f"label values {shown} are not covered by {how}; give --ortgate-label-map "
            "DATASET_VALUE=MODEL_LABEL,... for every value"
        )
    return np.asarray(ids, dtype=np.int64)


# ---------------------------------------------------------------- loading tables


def _head(path: Path, size: int = 4096) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(size)


def load_table(dataset: str, split: str | None):
    """A `datasets.Dataset` from a csv/jsonl/parquet file, a save_to_disk folder, or a hub name."""
    import datasets

    path = Path(dataset).expanduser()
    match = _SLICE.match(split or "")
    if split and not match:
        raise DataError(
            f"invalid --ortgate-split {split!r}: write a split name with an optional slice, e.g. test[:3000]"
        )
    name, slice_ = (match.group("name"), match.group("slice") or "") if match else ("", "")
    if path.is_dir():
        try:
            loaded = datasets.load_from_disk(str(path))
        except Exception as exc:  # datasets raises FileNotFoundError or ValueError here
            raise DataError(f"{path} is a folder but not a datasets.save_to_disk folder: {exc}") from None
        if isinstance(loaded, datasets.DatasetDict):
            chosen = name or ("test" if "test" in loaded else None)
            if chosen not in loaded:
                raise DataError(f"{path} holds splits {sorted(loaded)}; choose one with --ortgate-split")
            loaded = loaded[chosen]
        return _apply_slice(loaded, slice_, dataset)
    suffix = path.suffix.lower()
    if path.exists() and suffix in FILE_FORMATS:
        if path.is_file() and not _head(path).strip():
            raise DataError(f"dataset file {path} is empty; give a file with a header and labeled rows")
        kwargs = {"delimiter": "\t"} if suffix == ".tsv" else {}
        try:
            table = datasets.load_dataset(FILE_FORMATS[suffix], data_files=str(path), split="train", **kwargs)
        except Exception as exc:
            if "corresponds to no data" in str(exc):  # datasets' words for a file with a header only
                raise DataError(f"dataset file {path} has no rows, only a header") from None
            raise DataError(f"could not read {path} as {FILE_FORMATS[suffix]}: {first_line(exc)}") from None
        if len(table) == 0:
            raise DataError(f"dataset file {path} has no rows (columns: {table.column_names})")
        return _apply_slice(table, slice_, dataset)
    if path.exists():
        raise DataError(f"{path}: unsupported dataset file type {suffix!r}; use one of {', '.join(FILE_FORMATS)}")
    if suffix in FILE_FORMATS or dataset.startswith((".", "/", "~")) or dataset.count("/") > 1:
        raise DataError(f"dataset file {path} does not exist; check --ortgate-dataset")
    try:
        return datasets.load_dataset(dataset, split=split or "test")
    except Exception as exc:
        raise DataError(
            f"could not load dataset {dataset!r} (split {split or 'test'!r}) from the Hugging Face Hub: "
            f"{type(exc).__name__}: {first_line(exc)}. Without network access, "
            "give a local csv/jsonl/parquet file or a datasets.save_to_disk folder."
        ) from None


def _apply_slice(table, slice_: str, dataset: str):
    if not slice_:
        return table
    m = re.fullmatch(r"\[(-?\d*):(-?\d*)\]", slice_)
    if not m:
        raise DataError(f"invalid slice {slice_!r} for {dataset}: write e.g. [:3000] or [100:500]")
    start, stop = (int(g) if g else None for g in m.groups())
    rows = range(len(table))[start:stop]
    return table.select(rows if len(rows) else [])


def labeled_columns(
    table,
    text_columns: Sequence[str] | None,
    label_column: str | None,
    source: str,
) -> tuple[list[str], list[object]]:
    """Texts (one column, or title + content combined) and raw label values."""
    columns = list(table.column_names)
    text_columns = list(text_columns or ["text"])
    label_column = label_column or "label"
    if len(text_columns) > 2:
        raise DataError(f"--ortgate-text-column takes one column, or two (title, content); got {text_columns}")
    for role, col in [*(("text", c) for c in text_columns), ("label", label_column)]:
        if col not in columns:
            raise DataError(
                f"{source} has no {role} column {col!r}; its columns are {columns}. "
                f"Name the right one with --ortgate-{role}-column"
            )
    if len(text_columns) == 1:
        texts = ["" if t is None else str(t) for t in table[text_columns[0]]]
    else:
        texts = [combine_text(a, b) for a, b in zip(table[text_columns[0]], table[text_columns[1]], strict=True)]
    labels = list(table[label_column])
    _refuse_rows([i for i, t in enumerate(texts) if not t.strip()], "an empty or missing text",
                 f"column {' + '.join(text_columns)!r}", source)
    _refuse_rows([i for i, v in enumerate(labels) if v is None or (isinstance(v, float) and v != v)],
                 "a missing label", f"column {label_column!r}", source)
    return texts, labels


def _refuse_rows(rows: list[int], problem: str, where: str, source: str) -> None:
    """One error that names the rows (0-based, as in the loaded table), so they can be fixed or filtered."""
    if rows:
        shown = ", ".join(map(str, rows[:10])) + (f" and {len(rows) - 10} more" if len(rows) > 10 else "")
        raise DataError(f"{source}: {len(rows)} row(s) have {problem} in {where}: rows {shown} (0-based); "
                        "remove or fill them, then run again")


def split_eval_calibration(
    texts: list[str], labels: np.ndarray, limit: int | None, calibration_rows: int, source: str
) -> EvalData:
    """Calibration rows come from the end of the data, evaluation rows from the start, never both."""
    if not texts:
        raise DataError(f"{source} selects no rows; check --ortgate-split and --ortgate-limit")
    n_cal = min(calibration_rows, len(texts) // 2)
    eval_end = len(texts) - n_cal
    if limit is not None:
        eval_end = min(eval_end, limit)
    if eval_end < 1:
        raise DataError(f"{source}: --ortgate-limit {limit} leaves no evaluation rows")
    note = f"{source}: {eval_end} evaluation rows, {n_cal} calibration rows (last {n_cal} of {len(texts)})"
    return EvalData(texts[:eval_end], labels[:eval_end], texts[len(texts) - n_cal :], note)


# ---------------------------------------------------------------- the default: VADER snippets


def vader_snippets(cache_dir: Path, corpus: str) -> tuple[list[str], list[str]]:
    """(texts, labels) of one VADER corpus, binarized by the sign of the mean rating, zeros dropped."""
    if corpus not in VADER_CORPORA:
        raise DataError(f"unknown VADER corpus {corpus!r}; choose one of {VADER_CORPORA}")
    sdist = pypi.fetch(pypi.VADER_SDIST, cache_dir)
    with tarfile.open(sdist) as outer:
        inner_bytes = outer.extractfile(VADER_MEMBER).read()
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        raw = inner.extractfile(f"hutto_ICWSM_2014/{corpus}_GroundTruth.txt").read()
    return parse_ground_truth(raw.decode("utf-8"))


def parse_ground_truth(text: str) -> tuple[list[str], list[str]]:
    """VADER `*_GroundTruth.txt`: id, mean rating (-4..+4), text, tab-separated; the sign is the label."""
    texts, labels = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            _id, rating, snippet = line.split("\t", 2)
            score = float(rating)
        except ValueError:
            raise DataError(
                f"VADER ground truth line {number} is not 'id<TAB>rating<TAB>text': {line[:60]!r}"
            ) from None
        if score != 0:
            texts.append(snippet.strip())
            labels.append("POSITIVE" if score > 0 else "NEGATIVE")
    return texts, labels


def load_eval_data(
    *,
    dataset: str | None,
    split: str | None,
    text_columns: Sequence[str] | None,
    label_column: str | None,
    label_map: Mapping[str, str] | None,
    limit: int | None,
    id2label: Mapping[int, str],
    cache_dir: Path,
    calibration_rows: int = DEFAULT_CALIBRATION_ROWS,
) -> EvalData:
    if dataset is None:
        texts, raw_labels = vader_snippets(cache_dir, "amazonReviewSnippets")
        source = "VADER amazonReviewSnippets (vaderSentiment 3.3.2 sdist)"
        limit = DEFAULT_EVAL_ROWS if limit is None else limit
    else:
        table = load_table(dataset, split)
        source = f"{dataset}" + (f" [{split}]" if split else "")
        texts, raw_labels = labeled_columns(table, text_columns, label_column, source)
    labels = to_label_ids(raw_labels, id2label, label_map)
    return split_eval_calibration(texts, labels, limit, calibration_rows, source)
