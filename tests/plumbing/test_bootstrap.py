"""Reading the coordinator's bootstrap info from a file or its dashboard, and waiting for it to appear."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from plumbing.bootstrap import (
    NotYetAvailable,
    bootstrap_url,
    dialable_first,
    parse,
    read_bootstrap,
    wait_for_bootstrap,
)
from plumbing.swarm_dht import BootstrapError

pytestmark = pytest.mark.unit

PEER = "12D3KooWNkmZBtLxs5Khuu7GYNSmZ5wtmk89Wo99m7vfVM374yKU"
DOCUMENT = {"schema": 1, "run": "r1", "public_key": "abc", "grpc_address": "0.0.0.0:50051", "version": "0.1.0",
            "maddrs": [f"/ip4/127.0.0.1/tcp/31337/p2p/{PEER}", f"/ip4/10.0.0.2/tcp/31337/p2p/{PEER}"], "now": 1.0}


def test_urls_and_files():
    assert bootstrap_url("http://coordinator:8080") == "http://coordinator:8080/api/v1/bootstrap"
    assert bootstrap_url("https://c.example.org/") == "https://c.example.org/api/v1/bootstrap"
    assert bootstrap_url("http://c:8080/custom/path") == "http://c:8080/custom/path"
    assert bootstrap_url("/shared/bootstrap.json") is None


def test_a_malformed_document_names_the_source_and_the_field():
    assert parse(DOCUMENT, "f").maddrs == tuple(DOCUMENT["maddrs"])
    for broken, field in (([], "JSON object"), ({**DOCUMENT, "public_key": ""}, "public_key"),
                          ({**DOCUMENT, "maddrs": ["/ip4/1.2.3.4/tcp/1"]}, "maddrs"),
                          ({**DOCUMENT, "schema": 9}, "schema 9 is newer")):
        with pytest.raises(BootstrapError, match=f"bootstrap info at /x.json is malformed: .*{field}"):
            parse(broken, "/x.json")


def test_a_file_that_appears_later_is_waited_for(tmp_path):
    path = tmp_path / "bootstrap.json"
    with pytest.raises(NotYetAvailable, match="does not exist"):
        read_bootstrap(str(path))
    threading.Timer(0.7, lambda: path.write_text(json.dumps(DOCUMENT))).start()
    waits = []
    info = wait_for_bootstrap(str(path), timeout_s=20, on_first_wait=waits.append)
    assert info.run == "r1" and info.source == str(path) and len(waits) == 1


def test_no_document_in_time_is_a_bootstrap_error_with_advice(tmp_path):
    started = time.monotonic()
    with pytest.raises(BootstrapError, match=r"(?s)no bootstrap info from .* within 1s.*check that:.*--ready-file"):
        wait_for_bootstrap(str(tmp_path / "never.json"), timeout_s=1)
    assert time.monotonic() - started < 5


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the standard library's name
        body = json.dumps(DOCUMENT).encode()
        self.send_response(200 if self.path == "/api/v1/bootstrap" else 404)
        self.end_headers()
        self.wfile.write(body if self.path == "/api/v1/bootstrap" else b"{}")

    def log_message(self, *args):
        pass


def test_read_over_http_from_a_dashboard():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert read_bootstrap(base).public_key == "abc"
        with pytest.raises(BootstrapError, match="answered 404"):
            read_bootstrap(base + "/not/here")
    finally:
        server.shutdown()
    with pytest.raises(NotYetAvailable):
        read_bootstrap("http://127.0.0.1:9", timeout=2)


def test_loopback_addresses_are_dropped_when_others_exist():
    assert dialable_first(DOCUMENT["maddrs"]) == [DOCUMENT["maddrs"][1]]
    assert dialable_first(DOCUMENT["maddrs"][:1]) == DOCUMENT["maddrs"][:1]
    assert dialable_first([f"/dns4/localhost/tcp/1/p2p/{PEER}", f"/dns4/coord/tcp/1/p2p/{PEER}"]) == [
        f"/dns4/coord/tcp/1/p2p/{PEER}"]
