import json

import numpy as np
import pytest

from ortgate.errors import ConfigError, DataError
from ortgate.sources.data import (
    combine_text,
    labeled_columns,
    load_eval_data,
    load_table,
    parse_ground_truth,
    split_eval_calibration,
    to_label_ids,
)
from ortgate.spec.parsers import parse_label_map
from tiny import write_dataset

ID2LABEL = {0: "NEGATIVE", 1: "POSITIVE"}


@pytest.mark.parametrize(
    "title, content, expected",
    [
        ("Great product", "Works well.", "Great product. Works well."),
        ("Great product!", "Works well.", "Great product! Works well."),
        ("Is it good?", "Yes", "Is it good? Yes"),
        ("Done.", "", "Done."),
        ("Title", None, "Title."),
        ("  spaced  ", "  body ", "spaced. body"),
        ("", "only content", "only content"),
    ],
)
def test_combine_text_the_reference_way(title, content, expected):
    assert combine_text(title, content) == expected


def test_label_map_parsing():
    assert parse_label_map("positive=POSITIVE, negative=NEGATIVE") == {"positive": "POSITIVE", "negative": "NEGATIVE"}
    assert parse_label_map("1=POSITIVE,-1=NEGATIVE") == {"1": "POSITIVE", "-1": "NEGATIVE"}
    assert parse_label_map(None) is None
    with pytest.raises(ConfigError, match="DATASET_VALUE=MODEL_LABEL"):
        parse_label_map("positive")


def test_labels_map_by_name_id_or_explicit_map():
    assert to_label_ids(["positive", "NEGATIVE"], ID2LABEL, None).tolist() == [1, 0]
    assert to_label_ids([1, 0, 1.0, "0"], ID2LABEL, None).tolist() == [1, 0, 1, 0]
    assert to_label_ids([1, -1], ID2LABEL, {"1": "POSITIVE", "-1": "NEGATIVE"}).tolist() == [1, 0]


def test_unknown_labels_are_named():
    with pytest.raises(DataError, match=r"label values 'neutral' are not covered by the model's id2label"):
        to_label_ids(["positive", "neutral"], ID2LABEL, None)
    with pytest.raises(DataError, match=r"'2'.*--ortgate-label-map"):
        to_label_ids([1, 2], ID2LABEL, {"1": "POSITIVE"})
    with pytest.raises(DataError, match=r"maps to \['GOOD'\], which are not labels of the model"):
        to_label_ids([1], ID2LABEL, {"1": "GOOD"})


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_each_file_format_loads(tmp_path, suffix):
    path = write_dataset(tmp_path / f"reviews{suffix}", n=12)
    table = load_table(str(path), None)
    texts, labels = labeled_columns(table, None, None, str(path))
    assert len(texts) == 12 and set(labels) <= {"negative", "positive"}
    assert all("the " in t for t in texts)


def test_save_to_disk_folder_with_splits_and_slices(tmp_path, tiny_csv):
    import datasets

    table = load_table(str(tiny_csv), None)
    datasets.DatasetDict({"train": table, "test": table.select(range(10))}).save_to_disk(str(tmp_path / "dd"))
    assert len(load_table(str(tmp_path / "dd"), None)) == 10  # "test" by default
    assert len(load_table(str(tmp_path / "dd"), "train[:5]")) == 5
    assert len(load_table(str(tmp_path / "dd"), "train[5:8]")) == 3
    assert len(load_table(str(tiny_csv), "[:7]")) == 7
    with pytest.raises(DataError, match=r"holds splits \['test', 'train'\]"):
        load_table(str(tmp_path / "dd"), "validation")


def test_title_and_content_columns_are_combined(tmp_path):
    path = tmp_path / "amazon.jsonl"
    path.write_text(json.dumps({"title": "Love it", "content": "Best buy ever", "label": 1}) + "\n"
                    + json.dumps({"title": "Meh.", "content": "", "label": 0}) + "\n")
    texts, labels = labeled_columns(load_table(str(path), None), ["title", "content"], None, str(path))
    assert texts == ["Love it. Best buy ever", "Meh."] and labels == [1, 0]


def test_missing_file_column_and_bad_split_are_named(tmp_path, tiny_csv):
    with pytest.raises(DataError, match="dataset file .*nope.csv does not exist"):
        load_table(str(tmp_path / "nope.csv"), None)
    table = load_table(str(tiny_csv), None)
    with pytest.raises(DataError, match=r"no text column 'review'.*\['text', 'label'\].*--ortgate-text-column"):
        labeled_columns(table, ["review"], None, "reviews.csv")
    with pytest.raises(DataError, match=r"no label column 'stars'.*--ortgate-label-column"):
        labeled_columns(table, None, "stars", "reviews.csv")
    with pytest.raises(DataError, match="invalid slice"):
        load_table(str(tiny_csv), "[a:b]")
    (tmp_path / "data.xlsx").write_text("x")
    with pytest.raises(DataError, match="unsupported dataset file type"):
        load_table(str(tmp_path / "data.xlsx"), None)


def test_hub_dataset_without_network_says_so():
    with pytest.raises(DataError, match="Hugging Face Hub.*local csv/jsonl/parquet"):
        load_table("amazon_polarity", "test[:3000]")


def test_calibration_rows_never_overlap_evaluation_rows():
    texts = [f"t{i}" for i in range(100)]
    labels = np.arange(100) % 2
    data = split_eval_calibration(texts, labels, limit=None, calibration_rows=16, source="x")
    assert len(data.texts) == 84 and data.calibration_texts == texts[84:]
    assert not set(data.texts) & set(data.calibration_texts)
    limited = split_eval_calibration(texts, labels, limit=30, calibration_rows=16, source="x")
    assert limited.texts == texts[:30] and limited.calibration_texts == texts[84:]
    assert split_eval_calibration(texts[:10], labels[:10], None, 16, "x").calibration_texts == texts[5:10]


def test_empty_selection_is_an_error(tiny_csv):
    with pytest.raises(DataError, match="selects no rows"):
        split_eval_calibration([], np.array([]), None, 16, "empty.csv")
    with pytest.raises(DataError, match="selects no rows"):
        load_eval_data(dataset=str(tiny_csv), split="[40:]", text_columns=None, label_column=None, label_map=None,
                       limit=None, id2label=ID2LABEL, cache_dir=tiny_csv.parent)


def test_vader_ground_truth_parsing():
    raw = "1_1\t-0.9\tno picture at all.\r\n1_2\t0.0\tneutral line\r\n1_3\t2.5\tlove it\t(really)\r\n\r\n"
    assert parse_ground_truth(raw) == (["no picture at all.", "love it\t(really)"], ["NEGATIVE", "POSITIVE"])
    with pytest.raises(DataError, match="line 1"):
        parse_ground_truth("just text without tabs")


@pytest.mark.parametrize("values", [[0, 1, 1, 0], [0.0, 1.0, 1.0, 0.0], ["0", "1", "1", "0"],
                                    ["negative", "positive", "positive", "negative"]])
def test_labels_as_ints_whole_floats_and_strings(values):
    label_map = {"negative": "LABEL_0", "positive": "1"} if isinstance(values[0], str) and values[0].isalpha() else None
    ids = to_label_ids(values, {0: "LABEL_0", 1: "LABEL_1"}, label_map)  # mapped by name or by id
    assert ids.tolist() == [0, 1, 1, 0]


def test_fractional_labels_are_not_silently_rounded():
    with pytest.raises(DataError, match=r"label values '0.5' are not covered"):
        to_label_ids([0.5, 1.0], ID2LABEL, None)


def test_three_classes():
    id2label = {0: "negative", 1: "neutral", 2: "positive"}
    assert to_label_ids(["positive", "neutral", "NEGATIVE"], id2label, None).tolist() == [2, 1, 0]


def test_empty_file_and_header_only_file_say_so(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("text,label\n")
    with pytest.raises(DataError, match="empty.csv is empty"):
        load_table(str(tmp_path / "empty.csv"), None)
    with pytest.raises(DataError, match="header.csv has no rows, only a header"):
        load_table(str(tmp_path / "header.csv"), None)


def test_empty_or_missing_texts_and_labels_name_their_rows(tmp_path):
    path = tmp_path / "gaps.jsonl"
    rows = [{"text": "good", "label": 1}, {"text": "", "label": 0}, {"text": None, "label": 1},
            {"text": "   ", "label": 0}, {"text": "bad", "label": None}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"3 row\(s\) have an empty or missing text in column 'text': rows 1, 2, 3"):
        labeled_columns(load_table(str(path), None), None, None, "gaps.jsonl")
    path.write_text("".join(json.dumps({**r, "text": "fine"}) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"1 row\(s\) have a missing label in column 'label': rows 4"):
        labeled_columns(load_table(str(path), None), None, None, "gaps.jsonl")


def test_a_label_map_target_is_a_name_before_an_id():
    ratings = {0: "1", 1: "2", 2: "3"}  # a rating model whose classes are named by digits
    assert to_label_ids(["one", "two"], ratings, {"one": "1", "two": "2"}).tolist() == [0, 1]
    assert to_label_ids(["pos", "neg"], ID2LABEL, {"pos": "positive", "neg": "0"}).tolist() == [1, 0]
