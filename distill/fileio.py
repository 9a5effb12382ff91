"""Atomic file writes: every output of the project goes through here.

A file is written under a temporary name in its destination directory and
renamed into place, so a reader sees the old file or the new one, never a
partial one, and a failed write (an exception, Ctrl-C) leaves the previous
file untouched and no temporary file behind.
"""

from collections.abc import Iterator
import contextlib
import json
import os
import tempfile
from typing import Any


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


def write_json(path: str | os.PathLike, obj: Any) -> None:
  """Writes `obj` as indented, key-sorted JSON to `path` atomically."""
  write_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
