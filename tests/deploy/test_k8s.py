"""The Helm chart in deploy/k8s/rankswarm: rendered offline, every manifest validated strictly against the
Kubernetes schemas, and the pods it describes run with `podman kube play` until their probes pass.

No API server is available, so the chart is rendered with helm-python-sdk and checked with
kubernetes-validate (both offline, `deploy` extra). `podman kube play` runs Deployments, Pods and
PVCs but not StatefulSets or Services, so the coordinator's Deployment is played as rendered and the
peer is the StatefulSet's pod template as the pod `<statefulset>-0` with its claim (what the
StatefulSet controller would make), reaching the coordinator through a host alias standing in for
the coordinator's Service. Probes are not run by podman on their own (no systemd timers here), so the
test waits for the peer's liveness command with `podman exec`, then runs the liveness check podman made
of it once with `podman healthcheck run`, and runs the readiness command with `podman exec`, as the
kubelet would. (podman 4.3 ignores startupProbe, played from 4.4 on: containers/podman#16794; and it
counts every failed `healthcheck run` toward the liveness failureThreshold, then restarts the
container: polled every 3 s, a peer that had not written its first heartbeat 20 s after starting,
under `make demo` beside CI, was restarted again and again.)
Everything runs in a network namespace of its own.
"""

from __future__ import annotations

import copy
import json
import os
import time

import pytest
import yaml
from conftest import require
from deploytools import PREFIX, REPO, SMALL_TRAINING_TOML, leftovers, network_namespace, podman, remove_everything

pytestmark = [pytest.mark.deploy, pytest.mark.slow]

CHART = REPO / "deploy" / "k8s" / "rankswarm"
KUBE_VERSION = "1.33.0"
RELEASE = f"{PREFIX}-{os.getpid()}-kube"  # one per test process, as test_compose's project
PEER_TOML = """steps = 100000
torch_threads = 1
""" + SMALL_TRAINING_TOML + """[gossip]
target_batch_size = 16
"""


def render(values: dict) -> list[dict]:
    from helm_python import Chart

    with Chart.load(CHART) as chart:
        rendered = chart.render(values=values, name=RELEASE, namespace="default")
    return [doc for text in rendered.values() for doc in yaml.safe_load_all(text) if doc]


@pytest.fixture(scope="module")
def manifests() -> dict[str, list[dict]]:
    require("py:helm_python", "py:kubernetes_validate")
    return {"cpu": render({}), "gpu": render({"peers": {"gpus": 1, "replicas": 8}})}


def test_every_rendered_manifest_is_valid_kubernetes(manifests):
    import kubernetes_validate

    kinds = []
    for docs in manifests.values():
        for doc in docs:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
            kinds.append(doc["kind"])
    assert sorted(set(kinds)) == ["ConfigMap", "Deployment", "PersistentVolumeClaim", "Service", "StatefulSet"]
    broken = copy.deepcopy(next(d for d in manifests["cpu"] if d["kind"] == "StatefulSet"))
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):  # strict: a misspelt field is caught
        kubernetes_validate.validate(broken, KUBE_VERSION, strict=True)


def test_gpus_are_requested_per_peer_from_the_values(manifests):
    peers = next(d for d in manifests["gpu"] if d["kind"] == "StatefulSet")
    container = peers["spec"]["template"]["spec"]["containers"][0]
    assert peers["spec"]["replicas"] == 8 and container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"name": "RANKSWARM_NODE_MODEL__DEVICE", "value": "cuda"} in container["env"]
    cpu = next(d for d in manifests["cpu"] if d["kind"] == "StatefulSet")
    assert "nvidia.com/gpu" not in json.dumps(cpu)
    assert cpu["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"  # a volume (identity) per pod


def test_a_peer_has_its_startup_seconds_before_liveness_counts(manifests):
    for docs in manifests.values():
        container = next(d for d in docs if d["kind"] == "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
        startup, liveness = container["startupProbe"], container["livenessProbe"]
        assert startup["exec"] == liveness["exec"]
        assert startup["periodSeconds"] * startup["failureThreshold"] == 600  # values.yaml probes.startupSeconds
    slow = next(d for d in render({"probes": {"startupSeconds": 95}}) if d["kind"] == "StatefulSet")
    assert slow["spec"]["template"]["spec"]["containers"][0]["startupProbe"]["failureThreshold"] == 10  # rounded up


def peer_pod(statefulset: dict, coordinator_ip: str, coordinator_service: str) -> tuple[dict, dict]:
    """The pod (and its claim) the StatefulSet controller would create first, with a host alias standing in for
    the coordinator's Service."""
    name = f"{statefulset['metadata']['name']}-0"
    spec = copy.deepcopy(statefulset["spec"]["template"]["spec"])
    claim_template = statefulset["spec"]["volumeClaimTemplates"][0]
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
             "metadata": {"name": f"{claim_template['metadata']['name']}-{name}"}, "spec": claim_template["spec"]}
    spec["volumes"].append({"name": "data", "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]}})
    # podman 4.3 publishes a containerPort on the host as if it were a hostPort, and the coordinator's pod
    # already holds 31337 there; in Kubernetes containerPort is informational, so the pod loses nothing
    for container in spec["containers"]:
        container.pop("ports", None)
    spec["hostAliases"] = [{"ip": coordinator_ip, "hostnames": [coordinator_service,
                                                                f"{coordinator_service}.default.svc"]}]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels":
                                                          statefulset["spec"]["template"]["metadata"]["labels"]},
           "spec": spec}
    return pod, claim


def container_of(pod_prefix: str, netns: str) -> str:
    """The app container of the pod kube play made whose name starts with `pod_prefix` (not its infra one)."""
    names = podman("ps", "-a", "--format", "{{.Names}}", "--filter", f"name={pod_prefix}", netns=netns).stdout.split()
    app = [n for n in names if not n.endswith("-infra")]
    assert len(app) == 1, f"expected one container in pod {pod_prefix}, found {names}"
    return app[0]


def wait_for(check, timeout: float, what: str, diagnose):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result.returncode == 0:
            return result
        time.sleep(3)
    raise AssertionError(f"{what} within {timeout:.0f}s: {result.stdout}{result.stderr}\n{diagnose()}")


def test_pods_run_with_podman_kube_play_until_their_probes_pass(image, tmp_path):
    require("py:helm_python", "py:kubernetes_validate", "catatonit")
    repository, tag = image.rsplit(":", 1)
    # shmSize "": podman makes an emptyDir volume root-owned 0755 (Kubernetes makes it world-writable), so the
    # unprivileged peer keeps podman's own /dev/shm instead of a Memory emptyDir there
    docs = render({"run": "kube-test", "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
                   "coordinator": {"config": "round_interval = 1.0\n"},
                   "peers": {"replicas": 1, "config": PEER_TOML, "shmSize": ""}})
    by_kind = {d["kind"]: d for d in docs if d["kind"] != "Service"}
    (tmp_path / "configmap.yaml").write_text(yaml.safe_dump(by_kind["ConfigMap"]))
    (tmp_path / "coordinator.yaml").write_text(yaml.safe_dump_all([by_kind["PersistentVolumeClaim"],
                                                                   by_kind["Deployment"]]))
    network = f"{RELEASE}-net"
    with network_namespace(RELEASE) as netns:
        try:
            podman("network", "create", network, netns=netns)
            podman("kube", "play", "--network", network, "--configmap", str(tmp_path / "configmap.yaml"),
                   str(tmp_path / "coordinator.yaml"), netns=netns, timeout=180)
            coordinator = container_of(f"{by_kind['Deployment']['metadata']['name']}-pod", netns)
            address = podman("inspect", coordinator, "--format",
                             "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", netns=netns).stdout.strip()
            pod, claim = peer_pod(by_kind["StatefulSet"], address, by_kind["Deployment"]["metadata"]["name"])
            (tmp_path / "peer.yaml").write_text(yaml.safe_dump_all([claim, pod]))
            podman("kube", "play", "--network", network, "--configmap", str(tmp_path / "configmap.yaml"),
                   str(tmp_path / "peer.yaml"), netns=netns, timeout=180)
            peer = container_of(pod["metadata"]["name"], netns)
            healthcheck = podman("inspect", peer, "--format", "{{json .Config.Healthcheck}}", netns=netns).stdout
            assert "rankswarm" in healthcheck and "/tmp/rankswarm-health.json" in healthcheck, healthcheck
            liveness = pod["spec"]["containers"][0]["livenessProbe"]["exec"]["command"]
            readiness = pod["spec"]["containers"][0]["readinessProbe"]["exec"]["command"]

            def diagnose() -> str:
                probe = podman("exec", peer, *liveness, netns=netns, check=False)
                return (f"probe: {probe.stdout}{probe.stderr}\npeer log:\n"
                        + podman("logs", peer, netns=netns, check=False).stderr[-3000:])

            wait_for(lambda: podman("exec", peer, *liveness, netns=netns, check=False), 180,
                     "the peer's liveness command did not pass", diagnose)
            live = podman("healthcheck", "run", peer, netns=netns, check=False)
            ready = wait_for(lambda: podman("exec", peer, *readiness, netns=netns, check=False), 240,
                             "the peer did not become ready (training)", diagnose)
            coordinator_live = podman("healthcheck", "run", coordinator, netns=netns, check=False)
            logs = podman("logs", peer, netns=netns, check=False).stdout
        finally:
            for name in ("peer.yaml", "coordinator.yaml"):
                if (tmp_path / name).exists():
                    podman("kube", "down", str(tmp_path / name), netns=netns, check=False, timeout=180)
            remove_everything(RELEASE, netns)
            for volume in ("data-" + f"{RELEASE}-rankswarm-peer-0", f"{RELEASE}-rankswarm-coordinator-data"):
                podman("volume", "rm", "-f", volume, netns=netns, check=False)
    assert live.returncode == 0, live.stdout + live.stderr
    assert "training" in ready.stdout, ready.stdout
    assert coordinator_live.returncode == 0, coordinator_live.stdout + coordinator_live.stderr
    assert "bootstrap: run kube-test" in logs
    assert leftovers(RELEASE) == []
