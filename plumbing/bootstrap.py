"""Joining a swarm without copying addresses and keys by hand: the coordinator's bootstrap info.

A coordinator publishes one small JSON document, at `http://HOST:PORT/api/v1/bootstrap` on its
dashboard and (with `--ready-file`) as a file:

    {"schema": 1, "run": "my-run", "public_key": "<fingerprint peers pin>",
     "maddrs": ["/ip4/10.0.0.2/tcp/31337/p2p/12D3Koo..."], "grpc_address": "0.0.0.0:50051",
     "http_address": "0.0.0.0:8080", "version": "0.3.0", "now": 1767000000.0}

A peer with `coordinator.bootstrap` set waits for it at start (`wait_for_bootstrap`; the
coordinator may come up later) and joins the DHT at the addresses listed there. The document is
only as trustworthy as the network it came over: the key in it is pinned only when the peer pins
none itself (node.swarm.peer applies it).
"""

from __future__ import annotations

import ipaddress
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from plumbing.swarm_dht import BootstrapError

BOOTSTRAP_PATH = "/api/v1/bootstrap"
SCHEMA = 1


class NotYetAvailable(Exception):
    """The bootstrap info is not there (yet): the coordinator is not up, or has not written its file."""


@dataclass(frozen=True)
class BootstrapInfo:
    """What a peer needs to join the coordinator's swarm; `source` says where it was read."""

    run: str
    public_key: str
    maddrs: tuple[str, ...]
    grpc_address: str | None
    http_address: str | None
    version: str
    now: float | None
    source: str


def bootstrap_url(spec: str) -> str | None:
    """The URL to fetch for `spec` (a dashboard address gets /api/v1/bootstrap), None when `spec` is a file."""
    parts = urlsplit(spec)
    if parts.scheme not in ("http", "https"):
        return None
    path = parts.path if parts.path not in ("", "/") else BOOTSTRAP_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def parse(document: object, source: str) -> BootstrapInfo:
    """Check a bootstrap document; BootstrapError naming the source and the field when it is malformed."""
    def bad(what: str) -> BootstrapError:
        return BootstrapError(f"the bootstrap info at {source} is malformed: {what} (is it a rankswarm "
                              "coordinator's /api/v1/bootstrap or --ready-file?)")

    if not isinstance(document, dict):
        raise bad("not a JSON object")
    if document.get("schema", SCHEMA) > SCHEMA:
        raise bad(f"schema {document['schema']} is newer than this rankswarm understands ({SCHEMA}): upgrade")
    for key in ("run", "public_key"):
        if not isinstance(document.get(key), str) or not document[key]:
            raise bad(f"{key!r} is missing or not a string")
    maddrs = document.get("maddrs")
    if not isinstance(maddrs, list) or not maddrs or not all(isinstance(m, str) and "/p2p/" in m for m in maddrs):
        raise bad("'maddrs' must be a non-empty list of multiaddrs with /p2p/<peer id>")
    now = document.get("now")
    return BootstrapInfo(run=document["run"], public_key=document["public_key"], maddrs=tuple(maddrs),
                         grpc_address=document.get("grpc_address"), http_address=document.get("http_address"),
                         version=str(document.get("version", "")), now=float(now) if now is not None else None,
                         source=source)


def read_bootstrap(spec: str, *, timeout: float = 5.0) -> BootstrapInfo:
    """One attempt: NotYetAvailable when nothing answers (yet), BootstrapError when the answer is malformed."""
    url = bootstrap_url(spec)
    if url is None:
        try:
            text = Path(spec).read_text()
        except FileNotFoundError:
            raise NotYetAvailable(f"{spec} does not exist") from None
        except OSError as err:
            raise NotYetAvailable(f"{spec}: {err}") from None
    else:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                text = response.read(1 << 20).decode("utf-8", "replace")
        except urllib.error.HTTPError as err:
            if err.code == 404:
                raise BootstrapError(f"{url} answered 404: that server serves no bootstrap info (an older "
                                     "coordinator, or not a rankswarm dashboard?)") from None
            raise NotYetAvailable(f"{url} answered {err.code}") from None
        except (urllib.error.URLError, OSError) as err:
            raise NotYetAvailable(f"{url}: {getattr(err, 'reason', err)}") from None
    try:
        document = json.loads(text)
    except ValueError:
        raise NotYetAvailable(f"{spec} is not (yet) valid JSON") from None
    return parse(document, url or spec)


def wait_for_bootstrap(spec: str, timeout_s: float, *, on_first_wait=None) -> BootstrapInfo:
    """Read the bootstrap info, retrying with backoff until `timeout_s`; BootstrapError with advice after that."""
    deadline = time.monotonic() + timeout_s
    delay, waited = 0.5, False
    while True:
        try:
            return read_bootstrap(spec, timeout=min(10.0, max(1.0, deadline - time.monotonic())))
        except NotYetAvailable as err:
            last = str(err)
        if time.monotonic() + delay > deadline:
            raise BootstrapError(
                f"no bootstrap info from {spec} within {timeout_s:.0f}s (last: {last}).\ncheck that:\n"
                "  - the coordinator is running (`rankswarm coordinator`) and its dashboard listens on an address\n"
                "    this peer reaches (http_listen, e.g. 0.0.0.0:8080; the port is open in the firewall);\n"
                "  - for a file: the coordinator was started with --ready-file on a volume this peer mounts;\n"
                "  - or raise coordinator.bootstrap_timeout_s if the coordinator starts slowly.")
        if not waited and on_first_wait is not None:
            on_first_wait(last)
        waited = True
        time.sleep(delay)
        delay = min(delay * 1.5, 5.0)


def _is_loopback(maddr: str) -> bool:
    parts = maddr.split("/")
    if len(parts) > 2 and parts[1] in ("ip4", "ip6"):
        try:
            return ipaddress.ip_address(parts[2]).is_loopback
        except ValueError:
            return False
    return len(parts) > 2 and parts[1] in ("dns", "dns4", "dns6") and parts[2] == "localhost"


def dialable_first(maddrs: list[str] | tuple[str, ...]) -> list[str]:
    """The addresses worth dialing from elsewhere: loopback ones are dropped unless there is nothing else.

    A coordinator listening on 0.0.0.0 lists 127.0.0.1 among its addresses; from another machine (or
    container) that address is the dialer itself, so it would only cost a failed dial."""
    others = [m for m in maddrs if not _is_loopback(m)]
    return others or list(maddrs)
