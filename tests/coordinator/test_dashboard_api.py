"""The dashboard's HTTP API on a real server at 127.0.0.1:0, over a ledger fed with real records on a
simulated clock: JSON numbers equal what was fed, /metrics is valid Prometheus text with the same
values, bad paths, methods and queries are refused clearly and the server keeps serving."""

from __future__ import annotations

import gzip
import http.client
import json
import re
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from coordinator_fakes import peer_status
from dashboard_fakes import PEER_TIMEOUT, FakeSwarm
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from coordinator.dashboard import web
from coordinator.dashboard.web import DashboardAddressError, DashboardApp, DashboardServer
from protos import records, swarm_pb2
from shaping import IndicatorStats

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A swarm of 5 with one of each trouble, and its dashboard server."""
    swarm = FakeSwarm(tmp_path_factory.mktemp("dashboard"), num_peers=5)
    swarm.announcing.add(4)      # joining
    swarm.run(6)
    swarm.lagging.add(2)         # behind
    swarm.failing.add(3)         # averaging failures
    swarm.run(5)
    app = DashboardApp(swarm.monitor, swarm.store, peer_timeout=PEER_TIMEOUT, max_history_rounds=50,
                       clock=lambda: swarm.now)
    server = DashboardServer("127.0.0.1:0", app).start()
    try:
        yield swarm, f"http://{server.address}"
    finally:
        server.stop()


def get(url: str, *, method: str = "GET", headers: dict | None = None):
    """(status, headers, body bytes) without raising on 4xx/5xx."""
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def get_json(url: str) -> dict:
    status, headers, body = get(url)
    assert status == 200 and headers["Content-Type"] == "application/json", body
    return json.loads(body)


@pytest.mark.integration
def test_state_reports_the_latest_round_and_every_peer_as_published(served):
    swarm, base = served
    doc = get_json(f"{base}/api/v1/state?peer_limit=1000")
    latest = swarm.results[-1]
    merged = IndicatorStats.merge_all(records.stats_of(c.stats) for c in latest.contributions)
    round_ = doc["round"]
    assert (round_["number"], round_["issued_at"], round_["num_peers"]) == (latest.record.round, swarm.now, 4)
    assert round_["merged"]["score"]["mean"] == merged.moments["score"].mean
    assert round_["merged"]["er"]["count"] == merged.moments["er"].count
    assert round_["baselines"]["er"] == latest.state.baselines.value("er")
    assert round_["explore_share"] == latest.record.balance.explore_share and round_["stale"] is False
    assert doc["run"] == "test-run" and doc["coordinator"]["version"] == "0.1.0"

    peers = {p["peer_id"]: p for p in doc["peers"]["items"]}
    assert {fake.index: peers[fake.peer_id]["state"] for fake in swarm.peers} == {
        0: "online", 1: "online", 2: "behind", 3: "online", 4: "joining"}
    for fake in swarm.peers[:4]:
        row, status = peers[fake.peer_id], fake.statuses[-1]
        for key in ("reward", "accuracy", "heldout_accuracy", "kl", "er", "erv", "era", "gate", "tokens_per_s",
                    "compression_ratio", "bytes_sent", "bytes_received", "epoch", "averaging_failures", "version",
                    "address", "balance_round"):
            assert row[key] == records.get(status, key), key
        assert row["reachability"] == ("relayed" if fake.index % 4 == 3 else "direct")
        assert row["rollouts_per_s"] == status.throughput
        assert row["step"] == fake.step and row["num_contributions"] == len(fake.published)
    assert peers[swarm.peers[2].peer_id]["epoch_lag"] == 5

    swarm_doc = doc["swarm"]
    live = [f.statuses[-1] for f in swarm.peers[:4]]
    assert swarm_doc["by_state"] == {"online": 3, "joining": 1, "behind": 1, "unreachable": 0, "gone": 0}
    assert swarm_doc["tokens_per_s"] == pytest.approx(sum(s.tokens_per_s for s in live))
    assert swarm_doc["reward"] == pytest.approx(sum(s.reward for s in live) / 4)
    assert swarm_doc["bytes_sent"] == sum(s.bytes_sent for s in live)
    assert {a["kind"] for a in doc["alerts"]["active"]} == {"peer_behind", "averaging_failures"}

    er = doc["distributions"]["er"]
    assert er["num_peers"] == 4 and er["num_responses"] == sum(s.er_deciles.count for s in live)
    assert sum(er["counts"]) == pytest.approx(er["num_responses"])
    assert er["edges"][0] == min(s.er_deciles.values[0] for s in live)
    assert er["edges"][-1] == pytest.approx(max(s.er_deciles.values[-1] for s in live))


@pytest.mark.integration
def test_peers_page_filters_sorts_and_pages(served):
    swarm, base = served
    everyone = get_json(f"{base}/api/v1/state?peer_sort=peer_id")["peers"]
    ids = sorted(f.peer_id for f in swarm.peers)
    assert [p["peer_id"] for p in everyone["items"]] == ids and everyone["total"] == 5
    page = get_json(f"{base}/api/v1/state?peer_sort=peer_id&peer_offset=1&peer_limit=2")["peers"]
    assert [p["peer_id"] for p in page["items"]] == ids[1:3] and (page["matching"], page["limit"]) == (5, 2)
    troubled = get_json(f"{base}/api/v1/state?peer_state=behind,joining")["peers"]
    assert [p["state"] for p in troubled["items"]] == ["behind", "joining"]  # problems first by default
    fastest = get_json(f"{base}/api/v1/state?peer_sort=tokens_per_s&peer_order=desc")["peers"]["items"]
    speeds = [p["tokens_per_s"] for p in fastest]
    assert speeds[:4] == sorted(speeds[:4], reverse=True) and speeds[4] is None  # unknown values last
    found = get_json(f"{base}/api/v1/state?peer_q={swarm.peers[3].peer_id[:10].upper()}")["peers"]
    assert [p["peer_id"] for p in found["items"]] == [swarm.peers[3].peer_id]


@pytest.mark.integration
def test_history_columns_match_the_rounds_and_grow_incrementally(served):
    swarm, base = served
    peer = swarm.peers[0]
    everyone = "&".join(f"peer={p.peer_id}" for p in swarm.peers)
    doc = get_json(f"{base}/api/v1/history?{everyone}")
    rounds = doc["rounds"]
    assert rounds["round"] == [r.record.round for r in swarm.results]
    assert rounds["reward"] == [records.stats_of(r.record.merged).moments["score"].mean for r in swarm.results]
    assert rounds["baseline_er"] == [r.state.baselines.value("er") for r in swarm.results]
    assert rounds["tokens"] == [sum(c.num_tokens for c in r.contributions) for r in swarm.results]
    window = swarm.results[-5:]
    seconds = window[-1].record.issued_at - swarm.results[-6].record.issued_at
    assert rounds["merged_tokens_per_s"][-1] == pytest.approx(sum(rounds["tokens"][-5:]) / seconds)
    assert rounds["merged_tokens_per_s"][0] is None  # the first round's work began at an unknown time
    # the peers' merged rates add up to the swarm's: one figure, split by peer
    for i in range(1, len(rounds["round"])):
        assert sum(doc["peers"][p.peer_id]["merged_tokens_per_s"][i] for p in swarm.peers) == pytest.approx(
            rounds["merged_tokens_per_s"][i])
    assert rounds["averaging_failures"][-5:] == [1, 1, 1, 1, 1]  # peer 3 fails once per round
    assert rounds["peers_behind"][-1] == 1 and doc["behind"][0]["peer_id"] == swarm.peers[2].peer_id
    series = doc["peers"][peer.peer_id]
    assert series["reward"] == [c.stats.score.sum / c.stats.score.count for c in peer.published]
    assert series["kl"][-1] == peer.statuses[-1].kl and series["tokens"][-1] == peer.published[-1].num_tokens

    # what the page does each round: fetch from the last row it has and splice; equal to a full fetch,
    # the rates too (their windows reach back before the first row asked for)
    part = get_json(f"{base}/api/v1/history?from_round=8&{everyone}")
    assert part["rounds"]["round"] == rounds["round"][7:]
    for name, column in part["rounds"].items():
        assert column == rounds[name][7:], name
    assert part["peers"][peer.peer_id] == {k: v[7:] for k, v in series.items()}
    newest = get_json(f"{base}/api/v1/history?max_rounds=3")["rounds"]
    assert newest["round"] == rounds["round"][-3:]
    assert newest["merged_tokens_per_s"] == rounds["merged_tokens_per_s"][-3:]
    assert get_json(f"{base}/api/v1/history?from_round=999")["rounds"]["round"] == []


@pytest.mark.integration
def test_metrics_are_prometheus_text_with_the_published_values(served):
    swarm, base = served
    status, headers, body = get(f"{base}/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    latest = swarm.results[-1].record
    assert samples[("rankswarm_round", ())] == latest.round
    assert samples[("rankswarm_baseline", (("indicator", "er"),))] == swarm.results[-1].state.baselines.value("er")
    assert samples[("rankswarm_explore_share_ratio", ())] == latest.balance.explore_share
    assert samples[("rankswarm_peers", (("state", "behind"),))] == 1
    assert samples[("rankswarm_meta_signals_merged_total", ())] == sum(len(f.published) for f in swarm.peers)
    fake = swarm.peers[3]
    peer = (("peer", fake.peer_id),)
    assert samples[("rankswarm_peer_averaging_failures_total", peer)] == fake.failures
    assert samples[("rankswarm_peer_sent_bytes_total", peer)] == fake.statuses[-1].bytes_sent
    assert samples[("rankswarm_peer_tokens_per_second", peer)] == fake.statuses[-1].tokens_per_s
    assert samples[("rankswarm_peer_state", (("peer", fake.peer_id), ("state", "online")))] == 1
    assert samples[("rankswarm_alerts", (("kind", "peer_behind"), ("severity", "warning")))] == 1
    assert families["rankswarm_peer_sent_bytes"].type == "counter"  # the parser strips _total
    for name in re.findall(r"^# TYPE (\S+) counter$", text, re.M):
        assert name.endswith("_total"), name
    assert len(re.findall(r"^# HELP ", text, re.M)) == len(re.findall(r"^# TYPE ", text, re.M)) == len(families)
    joining = swarm.peers[4].peer_id
    assert ("rankswarm_peer_reward", (("peer", joining),)) not in samples  # unknown values are left out


@pytest.mark.integration
def test_label_values_are_escaped(tmp_path):
    swarm = FakeSwarm(tmp_path, num_peers=1)
    swarm.peers[0].version = 'v"1\\2\nx'
    swarm.run(1)
    app = DashboardApp(swarm.monitor, swarm.store, peer_timeout=PEER_TIMEOUT, clock=lambda: swarm.now)
    response = app.handle("GET", "/metrics")
    [info] = [s for f in text_string_to_metric_families(response.body.decode()) if f.name == "rankswarm_peer_info"
              for s in f.samples]
    assert response.status == 200 and info.labels["version"] == 'v"1\\2\nx'


@pytest.mark.integration
def test_each_server_has_its_own_registry_and_the_default_one_stays_clean(served, tmp_path):
    swarm, base = served
    other = FakeSwarm(tmp_path, num_peers=1).run(2)
    app = DashboardApp(other.monitor, other.store, peer_timeout=PEER_TIMEOUT, clock=lambda: other.now)
    server = DashboardServer("127.0.0.1:0", app).start()
    try:
        rounds = [{s.name: s.value for f in text_string_to_metric_families(get(url + "/metrics")[2].decode())
                   for s in f.samples}["rankswarm_round"] for url in (base, f"http://{server.address}")]
    finally:
        server.stop()
    assert rounds == [swarm.results[-1].record.round, 2]
    assert not [m.name for m in REGISTRY.collect() if m.name.startswith("rankswarm")]


@pytest.mark.integration
def test_what_no_peer_measured_is_null_and_left_out_never_zero(tmp_path):
    swarm = FakeSwarm(tmp_path, num_peers=2)
    swarm.measures_kl = False  # loss.kl_coef 0: the peers have no reference policy and compute no KL
    swarm.run(4)
    # a schema-1 report: its averaging counters read 0 in the record but were never counted
    old = peer_status("old-peer", swarm.now - 0.5, schema_version=1, version="0.0.9",
                      reachability=swarm_pb2.REACHABILITY_DIRECT, step=3, throughput=1.5, bytes_sent=10,
                      bytes_received=20)
    swarm.ledger.note_statuses([old], swarm.now)
    swarm.monitor.refresh(swarm.now)
    app = DashboardApp(swarm.monitor, swarm.store, peer_timeout=PEER_TIMEOUT, clock=lambda: swarm.now)
    server = DashboardServer("127.0.0.1:0", app).start()
    base = f"http://{server.address}"
    try:
        state = get_json(f"{base}/api/v1/state")
        history = get_json(f"{base}/api/v1/history?peer={swarm.peers[0].peer_id}&peer=old-peer")
        _, _, metrics = get(f"{base}/metrics")
    finally:
        server.stop()
    peers = {p["peer_id"]: p for p in state["peers"]["items"]}
    assert state["swarm"]["kl"] is None and [p["kl"] for p in peers.values()] == [None, None, None]
    assert history["rounds"]["kl"] == [None] * 4 and history["peers"][swarm.peers[0].peer_id]["kl"] == [None] * 4
    assert history["peers"]["old-peer"]["merged_tokens_per_s"][1:] == [0.0] * 3  # merged nothing: a real 0
    schema_1 = peers["old-peer"]
    assert [schema_1[k] for k in ("averaging_rounds", "averaging_failures", "publish_failures",
                                  "last_averaging_error", "reward")] == [None] * 5
    assert (schema_1["bytes_sent"], schema_1["rollouts_per_s"]) == (10, 1.5)  # what schema 1 did report
    assert (state["swarm"]["averaging_rounds"], state["swarm"]["averaging_failures"]) == (8, 0)  # two peers count
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(metrics.decode()) for s in f.samples}
    assert "# HELP rankswarm_peer_kl " in metrics.decode()
    assert not [key for key in samples if key[0] == "rankswarm_peer_kl"]
    label = (("peer", "old-peer"),)
    assert ("rankswarm_peer_averaging_failures_total", label) not in samples
    assert samples[("rankswarm_peer_sent_bytes_total", label)] == 10


def raw_exchange(base: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `request` as bytes on a new connection; (status, headers, body) of the answer, read to the end."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("iso-8859-1").split("\r\n")
    assert status_line.startswith("HTTP/1.1 "), data[:200]
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


@pytest.mark.integration
@pytest.mark.parametrize("request_bytes, status, message", [
    (b"GET /api/v1/state?peer_q=" + b"x" * 100_000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414,
     "request line longer than 65536 bytes"),
    (b"GARBAGE\r\n\r\n", 400, "Bad request syntax ('GARBAGE')"),
    (b"GET / HTTP/1.1 extra\r\n\r\n", 400, "Bad request version ('extra')"),
    (b"GET / FTP/1.1\r\n\r\n", 400, "Bad request version ('FTP/1.1')"),
    (b"GET HTTP/1.1\r\n\r\n", 400, "has no target"),
    (b"GET / HTTP/2.0\r\n\r\n", 505, "Invalid HTTP version (2.0)"),
    (b"GET /\r\n", 505, "HTTP/0.9 is not supported"),
    (b"GET / HTTP/1.1\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n", 431, "Line too long"),
    (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(120)) + b"\r\n", 431, "Too many headers"),
    (b"BREW /api/v1/state HTTP/1.1\r\nHost: t\r\n\r\n", 501, "Unsupported method ('BREW')"),
    (b"GET /nothing/here HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", 404, "not found: /nothing/here"),
    (b"POST /api/v1/state HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello", 405, "POST is not allowed"),
], ids=["414-long-target", "400-one-word", "400-four-words", "400-not-http", "400-no-target", "505-http2",
        "505-http09", "431-long-header", "431-many-headers", "501-unknown-method", "404-page", "405-with-body"])
def test_every_error_is_json_even_before_routing_and_the_server_keeps_serving(served, request_bytes, status,
                                                                               message):
    _, base = served
    got, headers, body = raw_exchange(base, request_bytes)
    assert got == status and headers["content-type"] == "application/json", body[:300]
    assert int(headers["content-length"]) == len(body) and headers["connection"] == "close"
    error = json.loads(body)["error"]
    assert error["status"] == status and message in error["message"], error
    assert len(error["message"]) < 400  # an echoed request line is cut short
    assert get(f"{base}/healthz")[2] == b"ok\n"


@pytest.mark.integration
def test_a_bad_request_after_a_good_one_on_a_kept_alive_connection_is_json_too(served):
    _, base = served
    status, headers, rest = raw_exchange(base, b"GET /healthz HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n"
                                               b"GET / HTTP/1.1 extra\r\n\r\n")
    assert status == 200 and "connection" not in headers and rest.startswith(b"ok\n")  # kept alive
    second = rest.removeprefix(b"ok\n")
    head, _, body = second.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and b"Content-Type: application/json" in head
    assert json.loads(body)["error"]["message"] == "Bad request version ('extra')"


@pytest.mark.integration
def test_an_unexpected_error_is_a_json_500_and_the_server_keeps_serving(served, monkeypatch):
    swarm, base = served

    def broken(*args, **kwargs):
        raise RuntimeError("the monitor broke")

    with monkeypatch.context() as patch:
        patch.setattr(swarm.monitor, "snapshot", broken)
        for path in ("/api/v1/state", "/metrics"):
            status, headers, body = get(base + path)
            assert status == 500 and headers["Content-Type"] == "application/json", path
            assert json.loads(body) == {"error": {"status": 500,
                                                  "message": "internal error in the coordinator (see its log)"}}
    with monkeypatch.context() as patch:  # a failure outside the application, while reading the request
        patch.setattr(web._Handler, "parse_request", broken)
        status, headers, body = raw_exchange(base, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        assert status == 500 and json.loads(body)["error"]["status"] == 500 and headers["connection"] == "close"
    assert get_json(f"{base}/api/v1/state")["round"]["number"] == swarm.results[-1].record.round


@pytest.mark.integration
@pytest.mark.parametrize("query, message", [
    ("peer_limit=abc", "peer_limit='abc' must be an integer from 1 to 1000"),
    ("peer_limit=0", "from 1 to 1000"),
    ("peer_limit=1&peer_limit=2", "given 2 times"),
    ("peer_state=sleeping", "unknown state(s) ['sleeping']"),
    ("peer_sort=password", "peer_sort='password' must be one of"),
    ("colour=red", "unknown query parameter(s) 'colour'"),
    ("a=1&&b", "malformed query string"),
    ("peer_q=" + "x" * 201, "longer than 200"),
])
def test_malformed_state_queries_are_400_and_the_server_keeps_serving(served, query, message):
    _, base = served
    status, headers, body = get(f"{base}/api/v1/state?{query}")
    assert status == 400 and headers["Content-Type"] == "application/json"
    error = json.loads(body)["error"]
    assert error["status"] == 400 and message in error["message"]
    assert get_json(f"{base}/api/v1/state")["round"]["number"] >= 1


@pytest.mark.integration
@pytest.mark.parametrize("query, message", [
    ("from_round=5&to_round=2", "from_round=5 is after to_round=2"),
    ("max_rounds=51", "from 1 to 50"),
    ("from_round=-1", "from 0 to"),
    ("peer=../etc", "is not a peer id"),
    ("peer=" + "&peer=".join(f"p{i}" for i in range(33)), "at most 32 peer series"),
])
def test_malformed_history_queries_are_400(served, query, message):
    _, base = served
    status, _, body = get(f"{base}/api/v1/history?{query}")
    assert status == 400 and message in json.loads(body)["error"]["message"]


@pytest.mark.integration
def test_unknown_paths_are_404_and_other_methods_405(served):
    _, base = served
    status, headers, body = get(f"{base}/api/v2/state")
    assert status == 404 and "no API endpoint /api/v2/state" in json.loads(body)["error"]["message"]
    assert get(f"{base}/nothing/here")[0] == 404
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        status, headers, body = get(f"{base}/api/v1/state", method=method)
        assert status == 405 and headers["Allow"] == "GET, HEAD", method
    status, headers, body = get(f"{base}/api/v1/state", method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 100
    assert get(f"{base}/healthz")[2] == b"ok\n"


@pytest.mark.integration
def test_page_and_assets_are_served_from_the_package_with_no_outside_address(served):
    _, base = served
    status, headers, page = get(f"{base}/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    for name, kind in (("app.js", "text/javascript"), ("charts.js", "text/javascript"), ("style.css", "text/css"),
                       ("favicon.svg", "image/svg+xml")):
        status, headers, body = get(f"{base}/{name}")
        assert status == 200 and headers["Content-Type"].startswith(kind), name
        text = body.decode()
        # nothing is fetched from elsewhere (the SVG namespace URI is a name, not a request)
        assert not re.search(r"""(src|href|url|from|import|fetch)\s*[=(]?\s*["']?\s*(https?:)?//""",
                             text.replace("http://www.w3.org/2000/svg", "")), name
    assert b"<script type=\"module\" src=\"app.js\">" in page


@pytest.mark.integration
def test_large_answers_are_gzipped_when_asked(served):
    _, base = served
    status, headers, body = get(f"{base}/api/v1/state", headers={"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert json.loads(gzip.decompress(body))["run"] == "test-run"


def _keys(value, found: set[str]) -> set[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            found.add(key)
            _keys(item, found)
    elif isinstance(value, list):
        for item in value:
            _keys(item, found)
    return found


@pytest.mark.integration
def test_every_field_and_metric_is_documented_in_docs_api_md(served):
    swarm, base = served
    documented = set(re.findall(r"`([a-z_0-9]+)`", (REPO / "docs" / "api.md").read_text()))
    state = get_json(f"{base}/api/v1/state")
    history = get_json(f"{base}/api/v1/history?peer={swarm.peers[0].peer_id}")
    dynamic = {swarm.peers[0].peer_id, *state["swarm"]["versions"]}  # map keys that are data, not fields
    missing = (_keys(state, set()) | _keys(history, set())) - dynamic - documented
    assert not missing, f"fields missing from docs/api.md: {sorted(missing)}"
    _, _, body = get(f"{base}/metrics")
    families = {f.name for f in text_string_to_metric_families(body.decode())}
    names = {name + ("_total" if name in _counters(body.decode()) else "") for name in families}
    assert not names - documented, f"metrics missing from docs/api.md: {sorted(names - documented)}"


def _counters(text: str) -> set[str]:
    return {name.removesuffix("_total") for name in re.findall(r"^# TYPE (\S+) counter$", text, re.M)}


@pytest.mark.integration
def test_a_busy_port_is_a_startup_error_naming_the_key(served):
    swarm, base = served
    app = DashboardApp(swarm.monitor, swarm.store, peer_timeout=PEER_TIMEOUT, clock=lambda: swarm.now)
    with pytest.raises(DashboardAddressError, match="cannot listen on .*change http_listen"):
        DashboardServer(base.removeprefix("http://"), app).start()
    assert get(f"{base}/healthz")[0] == 200  # the first server is unharmed


@pytest.mark.integration
def test_a_stopped_server_ends_kept_alive_connections(tmp_path):
    swarm = FakeSwarm(tmp_path, num_peers=1).run(1)
    app = DashboardApp(swarm.monitor, swarm.store, peer_timeout=PEER_TIMEOUT, clock=lambda: swarm.now)
    server = DashboardServer("127.0.0.1:0", app).start()
    host, port = server.address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    connection.request("GET", "/healthz")
    assert connection.getresponse().read() == b"ok\n"  # the connection stays open (HTTP/1.1 keep-alive)
    server.stop()
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        connection.request("GET", "/healthz")
        connection.getresponse()


@pytest.mark.unit
def test_bootstrap_info_is_served_when_a_coordinator_provides_it(tmp_path):
    swarm = FakeSwarm(tmp_path, num_peers=1).run(1)
    document = {"schema": 1, "run": "r", "public_key": "k", "maddrs": ["/ip4/10.0.0.2/tcp/31337/p2p/12D3KooW"]}
    served = DashboardApp(swarm.monitor, swarm.store, peer_timeout=PEER_TIMEOUT, bootstrap=lambda: document)
    response = served.handle("GET", "/api/v1/bootstrap")
    assert response.status == 200 and json.loads(response.body) == document
    assert served.handle("GET", "/api/v1/bootstrap?x=1").status == 400  # unknown parameters are refused
    bare = DashboardApp(swarm.monitor, swarm.store, peer_timeout=PEER_TIMEOUT)
    missing = bare.handle("GET", "/api/v1/bootstrap")
    assert missing.status == 503 and "no bootstrap info" in json.loads(missing.body)["error"]["message"]


@pytest.mark.unit
def test_a_token_protected_dashboard_still_serves_joining_peers_and_probes(tmp_path):
    swarm = FakeSwarm(tmp_path, num_peers=1).run(1)
    document = {"schema": 1, "run": "r", "public_key": "k", "maddrs": ["/ip4/10.0.0.2/tcp/31337/p2p/12D3KooW"]}
    app = DashboardApp(swarm.monitor, swarm.store, peer_timeout=PEER_TIMEOUT, token="s3cret",
                       bootstrap=lambda: document)
    assert app.handle("GET", "/api/v1/bootstrap").status == 200  # public key and addresses only
    assert app.handle("GET", "/healthz").status == 200
    assert app.handle("GET", "/api/v1/state").status == 401
    assert app.handle("GET", "/metrics").status == 401
