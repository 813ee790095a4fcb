"""Child processes the demo (and the integration tests) start, and stop, as a group.

Each child runs in its own session so that stopping it also stops what it spawned (a
hivemind DHT forks a p2p daemon); stopping is SIGINT, then SIGTERM, then SIGKILL, each
with a deadline, so Ctrl-C never leaves a daemon behind.

`end_descendants` is the other direction: a failed process ends every process it started
(hivemind's DHT and averager processes, the p2p daemon the DHT started) before it exits.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# Each child asks Linux for SIGTERM when the launcher dies, however it dies (its own session keeps the child
# out of the terminal's Ctrl-C, so nothing else would). util-linux's setpriv asks for it and then execs the
# command: the launcher then spawns without a Python preexec_fn, so CPython uses vfork, and no fork handler
# runs in the child. gRPC's do (grpcio >= 1.80, grpc/grpc#43055): in a launcher with live gRPC channels the
# child restarted gRPC's poller, close_fds closed its epoll fd, and the child aborted before exec (seen in ci:
# "coordinator exited with code -6 ... epoll_wait error: Bad file descriptor").
SETPRIV = shutil.which("setpriv")
_EXEC_IF_PARENT = 'if [ "$PPID" != "$0" ]; then exit 143; fi; exec "$@"'  # $0: the launcher's pid


def _die_with_parent() -> None:
    """Without setpriv: the same request, made in the forked child before exec."""
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass  # not Linux/glibc: the staged stop below still applies when the launcher exits normally


class ManagedProcess:
    """One child process with its output in `log_path`."""

    def __init__(self, name: str, argv: list[str], log_path: str | Path, env: dict[str, str] | None = None):
        self.name = name
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = self.log_path.open("ab")
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        command, before_exec = (argv, _die_with_parent)
        if SETPRIV:
            # a launcher that died before setpriv's request was made is not signalled: the shell, started after
            # it, checks that its parent is still the launcher, and only then becomes the command
            command = [SETPRIV, "--pdeathsig", "TERM", "--", "sh", "-c", _EXEC_IF_PARENT, str(os.getpid()), *argv]
            before_exec = None
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=full_env, start_new_session=True, preexec_fn=before_exec)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal_group(self, sig: int) -> None:
        """Send `sig` to the child's whole process group (it runs in a session of its own)."""
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self, timeout: float = 10.0) -> int | None:
        """SIGKILL the whole group at once (a crash, as far as the others can tell)."""
        self.signal_group(signal.SIGKILL)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        return self.proc.returncode

    def stop(self, grace: float = 10.0) -> int | None:
        """Interrupt, then terminate, then kill the whole process group; returns the exit code."""
        return stop_all([self], grace)[0]

    def tail(self, num_lines: int = 20) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        return "\n".join(lines[-num_lines:])


def stop_all(processes: list[ManagedProcess], grace: float = 10.0) -> list[int | None]:
    """Stop several children at once: SIGINT to every group, wait up to `grace`, then SIGTERM,
    then SIGKILL, each stage with one shared deadline, so N slow children cost one wait, not N."""
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        running = [p for p in processes if p.proc.poll() is None]
        if not running:
            break
        for process in running:
            process.signal_group(sig)
        deadline = time.monotonic() + wait
        for process in running:
            try:
                process.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
    for process in processes:
        # stray grandchildren (a p2p daemon) may outlive the leader: clear the group
        process.signal_group(signal.SIGKILL)
        process.log.close()
    return [p.proc.returncode for p in processes]


def rankswarm_argv(*args: str) -> list[str]:
    """argv running the `rankswarm` CLI with this interpreter (works without the console script on PATH)."""
    return [sys.executable, "-m", "rankswarm.cli", *args]


def wait_for_json(path: str | Path, timeout: float, *, processes: list[ManagedProcess] = ()) -> dict[str, Any]:
    """Wait until a child writes the JSON file `path` (atomically), or fail with the child's log."""
    path = Path(path)
    deadline = time.monotonic() + timeout
    delay = 0.05
    while time.monotonic() < deadline:
        if path.is_file():
            try:
                return json.loads(path.read_text())
            except json.JSONDecodeError:
                pass  # being written; the writer renames into place, so this is rare
        for proc in processes:
            if not proc.alive:
                raise RuntimeError(f"{proc.name} exited with code {proc.proc.returncode} before writing {path}:\n"
                                   f"{proc.tail()}")
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)
    raise TimeoutError(f"{path} did not appear within {timeout:.0f}s")


def write_json_atomic(path: str | Path, payload: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True))
    os.replace(tmp, path)


def descendant_pids(root: int | None = None) -> list[int]:
    """Every live process below `root` (default: this one), children before grandchildren (Linux /proc)."""
    root = os.getpid() if root is None else root
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            # the command name is in parentheses and may hold spaces: the parent pid follows the last ")"
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not readable
        children.setdefault(ppid, []).append(int(entry.name))
    found, queue = [], list(children.get(root, []))
    while queue:
        pid = queue.pop(0)
        found.append(pid)
        queue += children.get(pid, [])
    return found


def end_descendants(grace_s: float = 2.0) -> list[int]:
    """SIGTERM every process this one started (listed all at once first, so that a daemon whose parent
    dies first is not lost), wait up to `grace_s`, then SIGKILL what is left; returns the pids."""
    pids = descendant_pids()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [pid for pid in pids if _signal(pid, sig)]
        deadline = time.monotonic() + grace_s
        while alive and time.monotonic() < deadline:
            _reap()
            alive = [pid for pid in alive if _exists(pid)]
            time.sleep(0.05)
        if not alive:
            break
    return pids


def _signal(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _exists(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has exited


def _reap() -> None:
    """Collect exited children, so that they do not linger as zombies."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass
