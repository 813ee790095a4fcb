"""An emulated wide-area network: hosts in network namespaces behind rate-limited links to one hub.

    with WanNetwork(num_hosts=3, rate_mbit=10) as net:
        proc = net.popen(0, [sys.executable, "script.py"], log_path=...)
        net.hosts[1].ip  # "10.77.0.2"
        net.interface_bytes(1)  # (sent, received) on host 1's link, as the kernel counted them

Layout (per run; every name carries a random tag, so parallel runs never collide):

    host namespace (untouched)      hub namespace `rw<tag>h`          host namespaces `rw<tag>n<i>`
                                    bridge br0 -- p<i> (veth) ====== eth0 (veth, 10.77.0.<i+1>/24)

Each host's link is shaped in both directions with a token bucket filter (`tc qdisc ... tbf`):
on its own eth0 (what it sends) and on the hub's end p<i> (what it receives), so a host with
rate R uploads and downloads at most R, as a datacenter behind an R uplink would. The machine's
kernel has no `netem`, so latency and loss are NOT emulated: every link has the sub-millisecond
latency of a veth pair, and only bandwidth is limited.

Safety: `tc` and every other configuration command only ever run inside namespaces this object
created (`_in_own_namespace` asserts it), never on the host namespace's interfaces (a qdisc on
the host's `lo` stalls every loopback transfer of the machine). Everything made here (namespaces,
with their veths, and the processes started in them) is removed on exit, also after a failure;
every wait is bounded. Needs root and iproute2 (`ip`, `tc`): `unavailable_reason()` says what is
missing, for a test's skip.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SUBNET = "10.77.0"  # private to each run's namespaces: parallel runs may reuse it
COMMAND_TIMEOUT_S = 10.0


def unavailable_reason() -> str | None:
    """Why a WAN network cannot be built here (None: it can)."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"`{tool}` (iproute2) is not installed"
    return None


@dataclass(frozen=True)
class Host:
    index: int
    namespace: str
    ip: str
    rate_mbit: float


def _run(argv: list[str]) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def tbf_args(rate_mbit: float) -> list[str]:
    """tc arguments of a token bucket filter at `rate_mbit`. The bucket (burst) holds at least a few
    full-size packets (a smaller one drops them for good) and about 10 ms of traffic; the queue holds
    about 200 ms, so TCP sees delay before loss, as behind a real uplink's buffer."""
    bytes_per_s = rate_mbit * 1e6 / 8
    burst = max(4 * 1514, int(bytes_per_s * 0.01))
    limit = max(2 * burst, int(bytes_per_s * 0.2))
    return ["tbf", "rate", f"{int(rate_mbit * 1000)}kbit", "burst", str(burst), "limit", str(limit)]


class WanNetwork:
    """`num_hosts` namespaces, each behind its own link of `rate_mbit` (one rate, or one per host;
    None: unshaped) to a hub bridge. A context manager: built on enter, removed on exit."""

    def __init__(self, num_hosts: int, rate_mbit: float | None | list[float | None]):
        if num_hosts < 1 or num_hosts > 200:
            raise ValueError(f"num_hosts must be 1..200, got {num_hosts}")
        rates = rate_mbit if isinstance(rate_mbit, list) else [rate_mbit] * num_hosts
        if len(rates) != num_hosts:
            raise ValueError(f"rate_mbit names {len(rates)} rates for {num_hosts} hosts")
        for rate in rates:
            if rate is not None and not 0.01 <= rate <= 100_000:
                raise ValueError(f"rate_mbit must be within 0.01..100000 Mbit/s (or None), got {rate}")
        self.rates = rates
        self.tag = secrets.token_hex(3)
        self.hub = f"rw{self.tag}h"
        self.hosts = [Host(i, f"rw{self.tag}n{i}", f"{SUBNET}.{i + 1}", rate) for i, rate in enumerate(rates)]
        self._namespaces: list[str] = []  # made so far: the only ones commands may touch, and delete
        self._processes: list[subprocess.Popen] = []

    # -- building and removing --------------------------------------------------------------------
    def __enter__(self) -> WanNetwork:
        reason = unavailable_reason()
        if reason is not None:
            raise RuntimeError(f"cannot build an emulated WAN: {reason}")
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _add_namespace(self, name: str) -> None:
        _run(["ip", "netns", "add", name])
        self._namespaces.append(name)
        self._ip(name, "link", "set", "lo", "up")  # p2pd and local clients talk over loopback

    def _build(self) -> None:
        self._add_namespace(self.hub)
        self._ip(self.hub, "link", "add", "br0", "type", "bridge")
        self._ip(self.hub, "link", "set", "br0", "up")
        for host in self.hosts:
            self._add_namespace(host.namespace)
            # made inside the host's namespace with its peer end in the hub's: never in the host namespace
            self._ip(host.namespace, "link", "add", "eth0", "type", "veth", "peer", "name", f"p{host.index}",
                     "netns", self.hub)
            self._ip(host.namespace, "addr", "add", f"{host.ip}/24", "dev", "eth0")
            self._ip(host.namespace, "link", "set", "eth0", "up")
            self._ip(self.hub, "link", "set", f"p{host.index}", "master", "br0")
            self._ip(self.hub, "link", "set", f"p{host.index}", "up")
            if host.rate_mbit is not None:
                self._tc(host.namespace, "qdisc", "add", "dev", "eth0", "root", *tbf_args(host.rate_mbit))
                self._tc(self.hub, "qdisc", "add", "dev", f"p{host.index}", "root", *tbf_args(host.rate_mbit))

    def close(self) -> None:
        """Stop every process started here, then delete the namespaces (their veths go with them).
        Safe to call twice; cleanup errors are collected and raised at the end."""
        errors = []
        for proc in self._processes:
            _stop(proc)
        for name in list(self._namespaces):
            try:
                self._kill_leftovers(name)
                _run(["ip", "netns", "del", name])
                self._namespaces.remove(name)
            except Exception as err:  # keep removing the others
                errors.append(f"{name}: {err}")
        if errors:
            raise RuntimeError("could not remove all of the emulated WAN: " + "; ".join(errors))

    def _kill_leftovers(self, namespace: str) -> None:
        """Processes still in a namespace of ours (children that left our processes' groups, such as a
        p2p daemon) were started here: end them by id, or the namespace would outlive its deletion."""
        pids = [int(p) for p in _run(["ip", "netns", "pids", namespace]).split()]
        for pid in pids:
            _signal(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while pids and time.monotonic() < deadline:
            pids = [int(p) for p in _run(["ip", "netns", "pids", namespace]).split()]
            time.sleep(0.05)

    # -- commands in our namespaces ---------------------------------------------------------------
    def _in_own_namespace(self, namespace: str) -> None:
        # the one guard between a tc command and the machine's own interfaces
        if namespace not in self._namespaces:
            raise AssertionError(f"refusing to configure {namespace!r}: not a namespace this WanNetwork made")

    def _ip(self, namespace: str, *args: str) -> str:
        self._in_own_namespace(namespace)
        return _run(["ip", "-n", namespace, *args])

    def _tc(self, namespace: str, *args: str) -> str:
        self._in_own_namespace(namespace)
        return _run(["ip", "netns", "exec", namespace, "tc", *args])

    def popen(self, index: int, argv: list[str], *, log_path: Path | str | None = None,
              env: dict[str, str] | None = None, stdin=subprocess.DEVNULL) -> subprocess.Popen:
        """Start `argv` inside host `index`'s namespace, in a process group of its own (stopped on exit).
        Its stdout and stderr go to `log_path` (or are discarded)."""
        namespace = self.hosts[index].namespace
        self._in_own_namespace(namespace)
        out = open(log_path, "ab") if log_path is not None else subprocess.DEVNULL  # closed below: the child has a copy
        try:
            proc = subprocess.Popen(["ip", "netns", "exec", namespace, *argv], stdout=out, stderr=subprocess.STDOUT,
                                    stdin=stdin, env=env, start_new_session=True)
        finally:
            if log_path is not None:
                out.close()  # the child holds its own copy
        self._processes.append(proc)
        return proc

    def interface_bytes(self, index: int) -> tuple[int, int]:
        """(bytes sent, bytes received) on host `index`'s link since it was made, Ethernet headers
        included: what the kernel counted, every protocol (DHT, averaging, TCP acks)."""
        stats = json.loads(self._ip(self.hosts[index].namespace, "-s", "-j", "link", "show", "eth0"))[0]["stats64"]
        return int(stats["tx"]["bytes"]), int(stats["rx"]["bytes"])


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _stop(proc: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """SIGTERM the process group, SIGKILL it if it is still there after `timeout_s`."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)


_RECEIVER = """
import socket, sys, time
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
server.settimeout(30)
conn, _ = server.accept()
conn.settimeout(60)
total, started = 0, None
while chunk := conn.recv(1 << 16):
    started = started or time.monotonic()
    total += len(chunk)
print(total, time.monotonic() - started, flush=True)
"""

_SENDER = """
import socket, sys, time
deadline = time.monotonic() + 20
while True:
    try:
        conn = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.1)
conn.sendall(bytes(int(sys.argv[3])))
conn.close()
"""


def probe_mbit(net: WanNetwork, sender: int, receiver: int, num_bytes: int, python: str,
               port: int = 45_999, timeout_s: float = 90.0) -> float:
    """Mbit/s of one TCP stream of `num_bytes` from host `sender` to host `receiver`, as the receiver
    timed it (first byte to end of stream): what the links let through."""
    recv = subprocess.Popen(["ip", "netns", "exec", net.hosts[receiver].namespace, python, "-c", _RECEIVER,
                             net.hosts[receiver].ip, str(port)], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    net._processes.append(recv)
    send = net.popen(sender, [python, "-c", _SENDER, net.hosts[receiver].ip, str(port), str(num_bytes)])
    out, _ = recv.communicate(timeout=timeout_s)
    send.wait(timeout=10)
    if recv.returncode != 0 or send.returncode != 0:
        raise RuntimeError(f"throughput probe failed (receiver {recv.returncode}, sender {send.returncode})")
    total, seconds = out.split()
    return int(total) * 8 / float(seconds) / 1e6
