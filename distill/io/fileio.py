"""Atomic writes, checksums and careful reads of the project's files.

A file is written under a temporary name in its destination directory and
renamed into place, so a reader sees the old file or the new one, never a
partial one, and a failed write (an exception, Ctrl-C) leaves the previous
file untouched and no temporary file behind.

Files that the project reads back (JSON state, checkpoints, cached datasets)
carry SHA-256 digests (`sha256_file`, `sha256_tree`); a file that cannot be
read back raises `DamagedFileError`, which names the file. `move_aside`
renames an output to a free `<path>.<tag>[-n]` name; nothing is deleted.
"""

from collections.abc import Iterable
from collections.abc import Iterator
import contextlib
import hashlib
import json
import math
import numbers
import os
import tempfile
from typing import Any

_CHUNK = 1 << 20


class DamagedFileError(ValueError):
  """A file that exists but cannot be read back; the message names it."""


def _umask() -> int:
  """The process umask, read without changing it where the OS allows.

  `os.umask` can only read it by setting it; setting 0 for a moment would
  apply to files that other threads (orbax's async checkpoint writers, the
  TensorBoard writer) create meanwhile. Linux reports it in /proc.
  """
  try:
    with open("/proc/self/status", encoding="ascii") as f:
      for line in f:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  except (OSError, ValueError):
    pass
  mask = os.umask(0o077)  # the strictest value, should a thread create files
  os.umask(mask)
  return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
  """Yields a temporary path that replaces `path` when the block succeeds.

  For writers that need a file name (h5py, np.savez): write the whole file to
  the yielded path; on a clean exit it is renamed to `path` with the usual
  permissions (0666 less the umask; `mkstemp` alone makes it owner-only), on
  an exception it is removed and `path` is left as it was.

  Args:
    path: the destination file; its directory is created if missing.

  Yields:
    The temporary file name, in the same directory as `path`.
  """
  path = os.path.abspath(os.path.expanduser(os.fspath(path)))
  directory = os.path.dirname(path)
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory,
                             prefix=f".{os.path.basename(path)}.",
                             suffix=".tmp")
  os.close(fd)
  try:
    yield tmp
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_atomic(path: str | os.PathLike, data: bytes | str) -> None:
  """Writes `data` (`str` as UTF-8) to `path` atomically."""
  if isinstance(data, str):
    data = data.encode("utf-8")
  with atomic_path(path) as tmp:
    with open(tmp, "wb") as f:
      f.write(data)


def write_json(path: str | os.PathLike, obj: Any, *,
               allow_nan: bool = True) -> None:
  """Writes `obj` as indented, key-sorted JSON to `path` atomically.

  Args:
    path: the destination file.
    obj: a JSON-serializable object.
    allow_nan: write NaN/Infinity (not JSON); False refuses them with a
      `ValueError` naming the file and the first key holding one.
  """
  if not allow_nan:
    bad = _first_nonfinite(obj, "")
    if bad is not None:
      raise ValueError(f"{os.fspath(path)}: refusing to write the non-finite"
                       f" value {bad[1]} at {bad[0] or 'the top level'}")
  write_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _first_nonfinite(obj: Any, where: str) -> tuple[str, float] | None:
  if (isinstance(obj, numbers.Real) and not isinstance(obj, numbers.Integral)
      and not math.isfinite(obj)):
    return where, obj
  items = (obj.items() if isinstance(obj, dict) else
           enumerate(obj) if isinstance(obj, (list, tuple)) else ())
  for k, v in items:
    bad = _first_nonfinite(v, f"{where}/{k}" if where else str(k))
    if bad is not None:
      return bad
  return None


def read_json(path: str | os.PathLike) -> Any:
  """Reads a JSON file, naming it in the error when it is damaged.

  Args:
    path: the file.

  Returns:
    The parsed object.

  Raises:
    FileNotFoundError: no such file.
    DamagedFileError: the file is not valid UTF-8 JSON.
  """
  path = os.fspath(path)
  with open(path, "rb") as f:
    raw = f.read()
  try:
    return json.loads(raw.decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise DamagedFileError(
        f"{path}: damaged, not valid JSON ({e}); move it away to have it"
        " rebuilt") from e


def write_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> None:
  """Writes `rows` to `path` atomically, one key-sorted JSON object a line.

  Args:
    path: the destination file.
    rows: JSON-serializable objects, written in order.
  """
  write_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n"
                             for r in rows))


def read_jsonl(path: str | os.PathLike) -> list[Any]:
  """Reads a JSON-lines file, naming the file and line when one is damaged.

  Args:
    path: the file.

  Returns:
    One parsed object per non-empty line, in order.

  Raises:
    FileNotFoundError: no such file.
    DamagedFileError: a line is not valid UTF-8 JSON.
  """
  path = os.fspath(path)
  with open(path, "rb") as f:
    raw = f.read()
  rows = []
  for i, line in enumerate(raw.split(b"\n"), 1):
    if not line.strip():
      continue
    try:
      rows.append(json.loads(line.decode("utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise DamagedFileError(
          f"{path}: line {i} damaged, not valid JSON ({e})") from e
  return rows


def sha256_file(path: str | os.PathLike) -> str:
  """The SHA-256 hex digest of a file's bytes."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK):
      h.update(chunk)
  return h.hexdigest()


def sha256_tree(directory: str | os.PathLike, *,
                exclude: tuple[str, ...] = ()) -> dict[str, str]:
  """SHA-256 of every file under `directory`, keyed by relative path.

  Args:
    directory: the root.
    exclude: relative paths to leave out.

  Returns:
    `{relative path ('/'-separated): hex digest}`, sorted by path.
  """
  directory = os.fspath(directory)
  out = {}
  for root, dirs, files in os.walk(directory):
    dirs.sort()
    for name in sorted(files):
      full = os.path.join(root, name)
      rel = os.path.relpath(full, directory).replace(os.sep, "/")
      if rel not in exclude:
        out[rel] = sha256_file(full)
  return dict(sorted(out.items()))


def move_aside(path: str | os.PathLike, tag: str) -> str:
  """Renames `path` to a free `<path>.<tag>[-n]`; never deletes anything.

  Args:
    path: an existing file or directory.
    tag: the suffix, e.g. 'stale-1a2b3c4d' or 'damaged'.

  Returns:
    The new path.
  """
  path = os.fspath(path)
  target, n = f"{path}.{tag}", 1
  while os.path.lexists(target):
    n += 1
    target = f"{path}.{tag}-{n}"
  os.replace(path, target)
  return target
