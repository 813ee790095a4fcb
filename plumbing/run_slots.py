"""Several peers sharing one run directory (one volume for `compose --scale`): each claims a slot.

`claim_slot(root)` takes the lowest `slot-N` below `root` that no running process holds, with an
exclusive lock (flock) on `slot-N/.lock` kept for the life of the process; the kernel drops the
lock when the process ends, however it ends, so there are no stale claims to clean up. A peer
re-created after a crash or an image update therefore takes back a free slot, and with it the DHT
identity, signing key and checkpoints of the peer it replaces, instead of starting as a stranger.
Locks are reliable on a local filesystem (a container volume); on a network filesystem give each
peer its own run_dir instead (the Slurm script does).
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from plumbing.errors import StartupError

MAX_SLOTS = 1024


class NoFreeSlot(StartupError):
    """Every slot of a shared run directory is held by a running process."""


@dataclass
class Slot:
    """A claimed slot; keep the object for as long as the process uses the slot (`release` ends the claim)."""

    index: int
    path: Path
    lock: IO[bytes]

    def release(self) -> None:
        self.lock.close()


def claim_slot(root: str | os.PathLike, max_slots: int = MAX_SLOTS) -> Slot:
    """Claim the lowest free `slot-N` directory below `root` (created as needed)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for index in range(max_slots):
        path = root / f"slot-{index}"
        path.mkdir(exist_ok=True)
        lock = open(path / ".lock", "ab")  # held open on purpose: the open file is the claim
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        except OSError as err:
            lock.close()
            raise StartupError(f"cannot lock {path / '.lock'} ({err}): shared_run_dir needs a filesystem with "
                               "flock; give each peer its own run_dir instead") from None
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n".encode())
        lock.flush()
        return Slot(index, path, lock)
    raise NoFreeSlot(f"all {max_slots} slots of {root} are held by running peers; give this peer another run_dir")
