import json

import pytest

from ortgate.cache import MANIFEST, Cache, check_entry


def writer(calls):
    def build(staging):
        calls.append(staging)
        (staging / "model.onnx").write_bytes(b"\x08\x07" * 1000)
        (staging / "config.json").write_text("{}")
        return {"note": "built"}
    return build


def test_miss_then_hit_then_new_key(tmp_path):
    cache, calls = Cache(tmp_path), []
    first = cache.get_or_build("variants", "onnx", "a" * 64, writer(calls))
    second = cache.get_or_build("variants", "onnx", "a" * 64, writer(calls))
    assert (first.hit, second.hit, len(calls)) == (False, True, 1)
    assert first.path == second.path and first.path.name == "onnx-" + "a" * 16
    assert second.manifest["metadata"] == {"note": "built"}
    assert set(second.manifest["files"]) == {"model.onnx", "config.json"}
    other = cache.get_or_build("variants", "onnx", "b" * 64, writer(calls))
    assert not other.hit and other.path != first.path and len(calls) == 2


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda p: (p / "model.onnx").write_bytes(b"\x08\x07" * 10), "truncated"),
        (lambda p: (p / "model.onnx").write_bytes(b"\x00\x07" * 1000), "corrupt"),
        (lambda p: (p / "model.onnx").unlink(), "missing"),
        (lambda p: (p / MANIFEST).unlink(), "manifest is missing"),
        (lambda p: (p / MANIFEST).write_text("{not json"), "unreadable"),
    ],
)
def test_damaged_entry_is_detected_and_rebuilt(tmp_path, damage, reason):
    cache, calls, notes = Cache(tmp_path), [], []
    entry = cache.get_or_build("variants", "onnx", "c" * 64, writer(calls))
    damage(entry.path)
    assert reason in check_entry(entry.path, "c" * 64)
    again = cache.get_or_build("variants", "onnx", "c" * 64, writer(calls), on_rebuild=notes.append)
    assert not again.hit and reason in again.rebuilt_because and len(calls) == 2
    assert notes and "rebuilding" in notes[0]
    assert check_entry(again.path, "c" * 64) is None


def test_failed_build_leaves_nothing_behind(tmp_path):
    cache = Cache(tmp_path)

    def broken(staging):
        (staging / "model.onnx").write_bytes(b"half")
        raise RuntimeError("export crashed")

    with pytest.raises(RuntimeError, match="export crashed"):
        cache.get_or_build("variants", "onnx", "d" * 64, broken)
    leftovers = [p.name for p in (tmp_path / "variants").iterdir() if p.name != ".locks"]
    assert leftovers == []


def test_manifest_of_another_key_is_not_trusted(tmp_path):
    cache = Cache(tmp_path)
    entry = cache.get_or_build("variants", "onnx", "e" * 64, writer([]))
    manifest = json.loads((entry.path / MANIFEST).read_text())
    manifest["key"] = "f" * 64
    (entry.path / MANIFEST).write_text(json.dumps(manifest))
    assert "another key" in check_entry(entry.path, "e" * 64)
