"""Every DHT key rankswarm uses, who may write it, what its subkeys mean, and the signing identity.

Keys (one set per run id; `run` matches RUN_ID_PATTERN):

| key                   | written by        | subkey                                 | value (bytes of swarm.proto) |
|-----------------------|-------------------|----------------------------------------|------------------------------|
| `<run>.meta_signals`  | every peer        | `[owner:<peer key>]#<step>`            | MetaSignal                   |
| `<run>.balance`       | the coordinator   | `[owner:<coordinator key>]`            | BalanceWeights               |
| `<run>.peer_status`   | every peer        | `[owner:<peer key>]`                   | PeerStatus                   |
| `<run>.weights`       | every peer        | `[owner:<peer key>]#<epoch>`           | WeightsClaim                 |
| `<run>.admission`     | the coordinator   | `[owner:<coordinator key>]`            | Admission                    |

Each value is one record of `protos/swarm.proto` as serialized protobuf bytes
(`protos.records.encode`); `plumbing.dht_records` writes and reads them.

Ownership is enforced inside hivemind: every process runs `RSASignatureValidator`, which
refuses a record whose subkey names an RSA public key unless the value is signed with the
matching private key, so no peer can write under another peer's subkey; and
`OwnedSubkeysValidator`, which refuses any record under these keys whose subkey names no
owner (an unsigned record, or a plain value that would shadow the whole dictionary).
Both run when a node stores a record for someone and when a node reads records back.

Meta-signals get one subkey per (peer, step) rather than one per peer, so a coordinator
whose round is slower than the peers' steps still sees every step until it expires (a
per-peer subkey would keep only the latest step). Weights claims are per (peer, epoch) for the
same reason: a peer compares its claim with the others' at the same epoch, even if they moved on.

A peer learns which balance subkey to trust from the coordinator key's fingerprint, given
in its config; the coordinator prints it at start and serves it in GetSwarmState.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from protos import RUN_ID_PATTERN  # the wire contract's rule for run ids (protos/__init__.py: no imports)

MAX_RECORD_TTL = 6 * 3600.0  # seconds; a longer expiration could pin a key for days
# hivemind's RSASignatureValidator reads `[owner:<OpenSSH public key>]` in a subkey as "only the holder of
# this key may write here"; rankswarm appends `#<step>` for per-step keys
OWNER_SUBKEY_FORMAT = b"[owner:%s]"
_OWNER_SUBKEY = re.compile(rb"^\[owner:(ssh-rsa [A-Za-z0-9+/=]+)\](?:#(\d{1,19}))?$")


def check_run_id(run: str) -> str:
    """Return `run` if it can name DHT keys, else raise ValueError with the rule."""
    if not isinstance(run, str) or not RUN_ID_PATTERN.match(run):
        raise ValueError(f"run id {run!r} must be 1-64 characters from A-Z a-z 0-9 _ - (e.g. 'gsm8k-tiny-01')")
    return run


def meta_signals_key(run: str) -> str:
    """Per-step meta-signals; subkey `[owner:<peer key>]#<step>`, written by that peer only."""
    return f"{check_run_id(run)}.meta_signals"


def balance_key(run: str) -> str:
    """Balance weights; subkey `[owner:<coordinator key>]`, trusted only under the pinned coordinator key."""
    return f"{check_run_id(run)}.balance"


def peer_status_key(run: str) -> str:
    """Peer health reports; subkey `[owner:<peer key>]`, written by that peer only."""
    return f"{check_run_id(run)}.peer_status"


def weights_key(run: str) -> str:
    """Which weights a peer holds after each swarm update; subkey `[owner:<peer key>]#<epoch>`, that peer only."""
    return f"{check_run_id(run)}.weights"


def admission_key(run: str) -> str:
    """Who may take part; subkey `[owner:<coordinator key>]`, trusted only under the pinned coordinator key."""
    return f"{check_run_id(run)}.admission"


def all_keys(run: str) -> tuple[str, ...]:
    return meta_signals_key(run), balance_key(run), peer_status_key(run), weights_key(run), admission_key(run)


FINGERPRINT_PATTERN = re.compile(r"^[0-9a-f]{32}$")  # what `fingerprint` returns


def fingerprint(public_key: bytes) -> str:
    """Short stable name of an OpenSSH-encoded RSA public key: 32 hex chars of its SHA-256."""
    return hashlib.sha256(public_key).hexdigest()[:32]


@dataclass(frozen=True)
class OwnedSubkey:
    """A parsed subkey: whose key it names and, for per-step keys, which step."""

    public_key: bytes
    step: int | None

    @property
    def owner(self) -> str:
        return fingerprint(self.public_key)


def parse_subkey(subkey: object) -> OwnedSubkey:
    """Parse `[owner:<ssh-rsa key>]` or `[owner:<ssh-rsa key>]#<step>`; ValueError says what is wrong."""
    if not isinstance(subkey, bytes):
        raise ValueError(f"subkey is {type(subkey).__name__}, not bytes naming an owner key")
    match = _OWNER_SUBKEY.match(subkey)
    if match is None:
        raise ValueError("subkey names no owner key (unsigned record)")
    step = int(match.group(2)) if match.group(2) is not None else None
    return OwnedSubkey(public_key=match.group(1), step=step)


def describe_subkey(subkey: object) -> str:
    """A short printable name for a subkey, for logs and rejection reports."""
    try:
        parsed = parse_subkey(subkey)
    except ValueError:
        text = repr(subkey)
        return text if len(text) <= 48 else text[:45] + "..."
    return parsed.owner if parsed.step is None else f"{parsed.owner}#{parsed.step}"


def owner_subkey(public_key: bytes, step: int | None = None) -> bytes:
    """The subkey only the holder of `public_key` can write: `[owner:<key>]`, or `...#<step>` for per-step keys."""
    base = OWNER_SUBKEY_FORMAT % public_key
    return base if step is None else base + b"#%d" % step
