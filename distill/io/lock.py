"""One run per workdir: an advisory lock on `<workdir>/.lock`.

Two launches on one workdir would train over each other's checkpoints and
move each other's outputs aside mid-run, so `hold` takes an exclusive
`fcntl.flock` on `<workdir>/.lock` for the whole run, and a second launch
is refused at once (`LockedError`, naming the workdir and the holder's pid,
host and start time) before it changes anything. The kernel releases a
flock when its holder's file descriptor closes, so a process that dies in
any way (`kill -9` included) never leaves a lock that blocks: the file
stays, with the last holder's details, and the next run takes it over.

The lock is advisory and local to one machine's kernel on most network
file systems' clients; multi-host runs take it on process 0 only (the
other processes share the workdir by design).
"""

from collections.abc import Iterator
import contextlib
import errno
import fcntl
import json
import os
import socket
import time

NAME = '.lock'


class LockedError(RuntimeError):
  """Another live process holds the workdir; the message names it."""


def _holder(fd: int) -> str:
  """What the lock file says about its holder, for the error message."""
  try:
    info = json.loads(os.pread(fd, 4096, 0).decode('utf-8'))
    started = time.strftime('%Y-%m-%d %H:%M:%S UTC',
                            time.gmtime(float(info['start_time'])))
    return (f'pid {info["pid"]} on host {info["host"]}, started'
            f' {started}')
  except (OSError, ValueError, KeyError, TypeError):
    # Its holder is between taking the lock and writing its details.
    return 'a process whose details are not written yet'


@contextlib.contextmanager
def hold(workdir: str) -> Iterator[str]:
  """Holds `<workdir>/.lock` exclusively while the block runs.

  Creates `workdir` if needed. The lock file is opened without truncation
  and written only once the lock is held, so a refused launch changes
  nothing.

  Args:
    workdir: the run's directory.

  Yields:
    The lock file's path.

  Raises:
    LockedError: another process holds the lock.
  """
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, NAME)
  # Python opens files non-inheritable, so a subprocess the run starts
  # never keeps the lock alive after the run dies.
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        raise
      raise LockedError(
          f'{workdir}: another run is using this workdir ({_holder(fd)};'
          f' lock file {path}). Wait for it to finish, stop it, or use'
          ' another --workdir') from None
    info = json.dumps({'pid': os.getpid(), 'host': socket.gethostname(),
                       'start_time': time.time()}).encode('utf-8')
    os.ftruncate(fd, 0)
    os.pwrite(fd, info, 0)
    yield path
  finally:
    os.close(fd)  # Releases the lock.
