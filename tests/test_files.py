"""The file helpers: atomic writes and digests (cache keys are made of these, so their bytes are pinned)."""

import hashlib
import os

import pytest

from ortgate import files
from ortgate.files import atomic_write_text, json_digest, sha256_file


def test_atomic_write_creates_and_replaces_without_leaving_a_temp_file(tmp_path):
    target = tmp_path / "record.json"
    atomic_write_text(target, "first\n")
    assert target.read_text() == "first\n"
    atomic_write_text(str(target), "second ★\n")
    assert target.read_text(encoding="utf-8") == "second ★\n"
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_a_failed_write_keeps_the_old_content_and_removes_its_temp_file(tmp_path):
    target = tmp_path / "record.json"
    target.write_text("old")
    with pytest.raises(UnicodeEncodeError):  # fails while writing the temp file
        atomic_write_text(target, "new \ud800")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_a_failed_replace_keeps_the_old_content_and_removes_its_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "record.json"
    target.write_text("old")

    def refuse(src, dst):
        assert os.path.dirname(src) == os.path.dirname(dst)  # same folder: os.replace is atomic there
        raise PermissionError("simulated")

    monkeypatch.setattr(files.os, "replace", refuse)
    with pytest.raises(PermissionError):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_json_digest_is_the_sha256_of_sorted_json():
    value = {"b": [1, 2], "a": "é"}
    assert json_digest(value) == "7d1f522b641be35c268b61f8a47f027d9ca80c1da1ce989ab8d0c3b88481a8cb"
    assert json_digest(value, compact=True) == "e72bd1bfe08db42c7cb48a01fcbbe441a57d28e5e64fcb08dcfab2cffe99f7a2"
    assert json_digest(value) == json_digest({"a": "é", "b": [1, 2]})  # key order does not matter


def test_sha256_file_reads_in_chunks(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(b"ortgate\n")
    assert sha256_file(path) == "bbbf177b798dde4d52026fee35c160367a2ffc13c9cc50ccbda3e378379151ae"
    data = os.urandom(10_000)
    path.write_bytes(data)
    assert sha256_file(path, chunk=7) == hashlib.sha256(data).hexdigest()
