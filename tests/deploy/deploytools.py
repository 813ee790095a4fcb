"""What the deploy tier needs from this machine, and the podman and image helpers its tests share.

Podman runs rootful with its own containers.conf (next to this file: runc, which works with this
machine's hybrid cgroups where crun does not; ulimits high enough for hivemind; netavark, whose
aardvark-dns resolves compose service names), passed as CONTAINERS_CONF so the machine's own
configuration is left alone. Base images cannot be pulled here, so the base (Debian bookworm with
Python 3.11) is made with mmdebstrap and imported; pip inside the build uses this machine's pip
configuration (its wheelhouse and local indexes are mounted read-only, its CA bundle passed as a
build secret). Every container, network, volume and network namespace a test creates carries the
`rankswarm-test` prefix and is removed by that test, also when it fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CONTAINERS_CONF = HERE / "containers.conf"
BASE_IMAGE = "localhost/rankswarm-test-base:bookworm"
PROMETHEUS_IMAGE = "localhost/rankswarm-test-prometheus:latest"
PREFIX = "rankswarm-test"
ENV = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
# the image's build inputs: a change to any of them gives the image a new tag (and a rebuild)
BUILD_INPUTS = ("deploy/Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "shaping", "protos", "plumbing",
                "node", "coordinator", "rankswarm")


def missing(*tools: str) -> list[str]:
    """The tools (commands, or `py:<module>`) this machine lacks, plus root if we are not."""
    absent = [] if os.geteuid() == 0 else ["root (rootful podman, network namespaces, slurmd)"]
    for tool in tools:
        if tool.startswith("py:"):
            import importlib.util

            if importlib.util.find_spec(tool[3:]) is None:
                absent.append(f"Python package {tool[3:]} (pip install -e '.[deploy]')")
        elif shutil.which(tool) is None and not Path(tool).exists():
            absent.append(tool)
    return absent


def run(argv: list[str], *, timeout: float = 120, check: bool = True, env: dict | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run a command with podman's settings; on failure the error carries its output."""
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env or ENV, cwd=cwd)
    if check and result.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} exited {result.returncode}:\n{result.stdout[-3000:]}\n"
                           f"{result.stderr[-3000:]}")
    return result


def podman(*args: str, timeout: float = 120, check: bool = True, netns: str | None = None
           ) -> subprocess.CompletedProcess:
    return run(in_netns(netns, ["podman", *args]), timeout=timeout, check=check)


def in_netns(netns: str | None, argv: list[str]) -> list[str]:
    """argv run inside the network namespace `netns` (a path), via nsenter: `ip netns exec` would also
    remount /sys and hide the cgroup mounts podman needs."""
    return argv if netns is None else ["nsenter", f"--net={netns}", *argv]


@contextmanager
def network_namespace(name: str) -> Iterator[str]:
    """A fresh network namespace with loopback up; yields its path and deletes it afterwards. Containers
    and bridges made inside it (and their iptables rules) live and die with it, away from the host's."""
    path = f"/run/netns/{name}"
    run(["ip", "netns", "add", name], env=os.environ)
    try:
        run(["nsenter", f"--net={path}", "ip", "link", "set", "lo", "up"], env=os.environ)
        yield path
    finally:
        run(["ip", "netns", "delete", name], env=os.environ, check=False)


def remove_everything(label_or_prefix: str, netns: str | None = None) -> None:
    """Remove the containers, pods, networks and volumes whose name starts with the prefix."""
    for kind, listing in (("pod", ["pod", "ps", "-q", "--filter", f"name={label_or_prefix}"]),
                          ("container", ["ps", "-aq", "--filter", f"name={label_or_prefix}"])):
        ids = podman(*listing, netns=netns, check=False).stdout.split()
        if ids:
            podman(kind, "rm", "-f", *ids, netns=netns, check=False, timeout=180)
    for kind in ("network", "volume"):
        names = [n for n in podman(kind, "ls", "--format", "{{.Name}}", netns=netns, check=False).stdout.split()
                 if n.startswith(label_or_prefix)]
        if names:
            podman(kind, "rm", "-f", *names, netns=netns, check=False)


def leftovers(prefix: str) -> list[str]:
    """Containers, pods, networks, volumes and namespaces named `prefix...` that still exist."""
    found = []
    for listing in (["ps", "-a", "--format", "{{.Names}}"], ["pod", "ps", "--format", "{{.Name}}"],
                    ["network", "ls", "--format", "{{.Name}}"], ["volume", "ls", "--format", "{{.Name}}"]):
        found += [f"{listing[0]} {n}" for n in podman(*listing, check=False).stdout.split() if n.startswith(prefix)]
    netns_dir = Path("/run/netns")
    namespaces = netns_dir.iterdir() if netns_dir.is_dir() else []
    found += [f"netns {p.name}" for p in namespaces if p.name.startswith(prefix)]
    return found


def image_exists(tag: str) -> bool:
    return podman("image", "exists", tag, check=False).returncode == 0


def ensure_base_image(timings: dict) -> str:
    """Debian bookworm with Python 3.11 and venv, made with mmdebstrap (about 50 s) unless already there."""
    if image_exists(BASE_IMAGE):
        return BASE_IMAGE
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"{PREFIX}-base-") as tmp:
        tar = Path(tmp) / "base.tar"
        run(["mmdebstrap", "--variant=minbase", "--include=python3,python3-venv",
             *(f"--dpkgopt=path-exclude=/usr/share/{d}/*" for d in ("man", "doc", "locale")),
             "bookworm", str(tar)], timeout=600, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        podman("import", "--change", 'CMD ["/bin/bash"]', str(tar), BASE_IMAGE, timeout=300)
    timings["base image s"] = round(time.monotonic() - started, 1)
    return BASE_IMAGE


def _pip_config() -> dict[str, str]:
    """This machine's pip settings (`pip config list`), e.g. {"find-links": "/opt/wheels", ...}."""
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                            timeout=60).stdout
    settings = {}
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        settings[key.split(".", 1)[-1]] = value.strip().strip("'\"")
    return settings


def build_args() -> list[str]:
    """podman build options that make pip inside the build use this machine's wheelhouse, indexes and CA."""
    settings, args = _pip_config(), []
    mounts: set[str] = set()
    for key, arg in (("index-url", "PIP_INDEX_URL"), ("extra-index-url", "PIP_EXTRA_INDEX_URL"),
                     ("find-links", "PIP_FIND_LINKS")):
        if settings.get(key):
            args += ["--build-arg", f"{arg}={settings[key]}"]
            for item in settings[key].split():
                path = item.removeprefix("file://")
                if path.startswith("/"):
                    mounts.add(str(Path(path).parent if path.rstrip("/").endswith("/simple") else path))
    local_torch = any(Path(d).is_dir() and any(Path(d).glob("torch-*+cpu-*.whl"))
                      for d in settings.get("find-links", "").split())
    if local_torch:  # the CPU wheel is right here: no need for download.pytorch.org
        args += ["--build-arg", "TORCH_INDEX="]
    for path in sorted(mounts):
        if Path(path).exists():
            args += ["-v", f"{path}:{path}:ro"]
    cert = settings.get("cert") or "/etc/ssl/certs/ca-certificates.crt"
    if Path(cert).is_file():
        args += ["--secret", f"id=ca_bundle,src={cert}"]
    return args


def source_hash() -> str:
    """A hash of the image's build inputs (the files git would see), for the image tag."""
    digest = hashlib.sha256()
    for name in BUILD_INPUTS:
        root = REPO / name
        for path in sorted([root] if root.is_file() else root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                digest.update(str(path.relative_to(REPO)).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def ensure_image(timings: dict) -> str:
    """The rankswarm image for the current sources, built once (deploy/Dockerfile) and reused by tag."""
    base = ensure_base_image(timings)
    tag = f"localhost/rankswarm:test-{source_hash()}"
    if image_exists(tag):
        timings["image"] = "reused"
        return tag
    started = time.monotonic()
    podman("build", "--format", "docker", "--network", "host", "-f", "deploy/Dockerfile", "-t", tag,
           "--label", f"{PREFIX}=1", "--build-arg", f"BASE_IMAGE={base}", *build_args(), str(REPO), timeout=1200)
    timings["image build s"] = round(time.monotonic() - started, 1)
    size = json.loads(podman("image", "inspect", tag).stdout)[0]["Size"]
    timings["image size MB"] = round(size / 1e6)
    return tag


def ensure_prometheus_image() -> str:
    """Prometheus from this machine's Debian package on the test base image (the compose file's
    PROMETHEUS_IMAGE; prom/prometheus cannot be pulled here)."""
    if image_exists(PROMETHEUS_IMAGE):
        return PROMETHEUS_IMAGE
    with tempfile.TemporaryDirectory(prefix=f"{PREFIX}-prom-") as tmp:
        shutil.copy2("/usr/bin/prometheus", Path(tmp) / "prometheus")
        (Path(tmp) / "Containerfile").write_text(
            f"FROM {BASE_IMAGE}\nCOPY prometheus /bin/prometheus\nRUN mkdir -p /prometheus\n"
            'ENTRYPOINT ["/bin/prometheus"]\n')
        podman("build", "--network", "host", "-t", PROMETHEUS_IMAGE, tmp, timeout=300)
    return PROMETHEUS_IMAGE


# A test-sized peer: a few small steps on one thread, no evaluation. Each deploy test adds its own
# top-level keys and [gossip] section (the TOML an operator would mount).
SMALL_TRAINING_TOML = """[algo]
prompts_per_step = 4
[sampling]
group_size = 4
[eval]
every = 0
num_problems = 8
"""
