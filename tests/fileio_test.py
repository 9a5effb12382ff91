"""Atomic writes: the old file survives a failed write, no temp file remains."""

import json
import os

import pytest

from distill.io import fileio


def test_write_json_round_trip_and_permissions(tmp_path):
  path = tmp_path / "sub" / "out.json"
  old = os.umask(0o022)
  try:
    fileio.write_json(path, {"b": 1, "a": [1, 2]})
  finally:
    os.umask(old)
  assert json.loads(path.read_text()) == {"a": [1, 2], "b": 1}
  assert (os.stat(path).st_mode & 0o777) == 0o644
  assert os.listdir(path.parent) == ["out.json"]


def test_failed_write_keeps_previous_file(tmp_path):
  path = tmp_path / "data.bin"
  fileio.write_atomic(path, b"good")
  with pytest.raises(RuntimeError, match="disk"):
    with fileio.atomic_path(path) as tmp:
      with open(tmp, "wb") as f:
        f.write(b"half")
      raise RuntimeError("disk full")
  assert path.read_bytes() == b"good"
  assert os.listdir(tmp_path) == ["data.bin"]


def test_text_is_utf8(tmp_path):
  path = tmp_path / "r.md"
  fileio.write_atomic(path, "± ok")
  assert path.read_bytes() == "± ok".encode("utf-8")


def test_read_json_names_a_damaged_file(tmp_path):
  path = tmp_path / "state.json"
  fileio.write_json(path, {"a": 1})
  assert fileio.read_json(path) == {"a": 1}
  path.write_bytes(b'{"a": 1')  # Cut by a kill.
  with pytest.raises(fileio.DamagedFileError, match=f"{path}: damaged"):
    fileio.read_json(path)
  path.write_bytes(b"\xff\xfe{}")
  with pytest.raises(fileio.DamagedFileError, match="state.json"):
    fileio.read_json(path)


def test_jsonl_round_trip_keeps_every_float(tmp_path):
  path = tmp_path / "m.jsonl"
  rows = [{"b": 0.1 + 0.2, "a": [1e-300, -2.5]}, {"name": "x", "nan": 1 / 3}]
  fileio.write_jsonl(path, rows)
  lines = path.read_text().splitlines()
  assert len(lines) == 2 and lines[0].startswith('{"a": ')  # sorted keys
  back = fileio.read_jsonl(path)
  assert back == rows
  assert back[0]["b"].hex() == (0.1 + 0.2).hex()
  assert not [p for p in os.listdir(tmp_path) if p != "m.jsonl"]
  path.write_text(lines[0] + "\n\n" + '{"x": ]\n')
  with pytest.raises(fileio.DamagedFileError, match=r"m\.jsonl: line 3"):
    fileio.read_jsonl(path)


def test_write_json_can_refuse_non_finite_values(tmp_path):
  path = tmp_path / "results.json"
  with pytest.raises(ValueError, match=r"results.json: .*nan at tasks/h/s"):
    fileio.write_json(path, {"tasks": {"h": {"s": float("nan")}}},
                      allow_nan=False)
  assert not path.exists()
  fileio.write_json(path, {"x": [1, 2.5, None]}, allow_nan=False)
  fileio.write_json(path, {"x": float("inf")})  # Allowed by default.
  assert "Infinity" in path.read_text()


def test_move_aside_finds_a_free_name_and_deletes_nothing(tmp_path):
  for i in range(3):
    (tmp_path / "out").write_text(str(i))
    fileio.move_aside(tmp_path / "out", "stale-ab")
  assert sorted(p.name for p in tmp_path.iterdir()) == [
      "out.stale-ab", "out.stale-ab-2", "out.stale-ab-3"]
  assert (tmp_path / "out.stale-ab-3").read_text() == "2"


def test_sha256_tree_covers_every_file(tmp_path):
  (tmp_path / "a").mkdir()
  (tmp_path / "a" / "x").write_bytes(b"1")
  (tmp_path / "y").write_bytes(b"2")
  tree = fileio.sha256_tree(tmp_path)
  assert list(tree) == ["a/x", "y"]
  assert tree["y"] == fileio.sha256_file(tmp_path / "y")
  assert list(fileio.sha256_tree(tmp_path, exclude=("y",))) == ["a/x"]
