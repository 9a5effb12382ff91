"""Atomic writes: the old file survives a failed write, no temp file remains."""

import json
import os

import pytest

from distill import fileio


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
