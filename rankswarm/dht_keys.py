"""Every DHT key rankswarm uses, who may write it, what its subkeys mean, and the signing identity.

Keys (one set per run id; `run` matches RUN_ID_PATTERN):

| key                   | written by        | subkey                                 | value (see dht_records)   |
|-----------------------|-------------------|----------------------------------------|---------------------------|
| `<run>.meta_signals`  | every peer        | `[owner:<peer key>]#<step>`            | MetaSignalRecord          |
| `<run>.balance`       | the coordinator   | `[owner:<coordinator key>]`            | BalanceRecord             |
| `<run>.peer_status`   | every peer        | `[owner:<peer key>]`                   | PeerStatusRecord          |
| `<run>.weights`       | every peer        | `[owner:<peer key>]#<epoch>`           | WeightsClaimRecord        |

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
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from hivemind.dht.crypto import RSASignatureValidator
from hivemind.dht.protocol import DHTProtocol
from hivemind.dht.routing import DHTID
from hivemind.dht.validation import DHTRecord, RecordValidatorBase
from hivemind.utils import get_dht_time
from hivemind.utils.crypto import RSAPrivateKey

log = logging.getLogger(__name__)

RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_RECORD_TTL = 6 * 3600.0  # seconds; a longer expiration could pin a key for days
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


def all_keys(run: str) -> tuple[str, ...]:
    return meta_signals_key(run), balance_key(run), peer_status_key(run), weights_key(run)


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


class SigningIdentity:
    """An RSA key pair that signs this process's DHT records; its fingerprint is its peer id."""

    def __init__(self, private_key: RSAPrivateKey):
        self.private_key = private_key
        self.public_key: bytes = private_key.get_public_key().to_bytes()
        self.fingerprint: str = fingerprint(self.public_key)

    @classmethod
    def generate(cls) -> SigningIdentity:
        """A fresh identity (tests, throwaway peers); its fingerprint changes on every start."""
        return cls(RSAPrivateKey())

    @classmethod
    def load_or_create(cls, path: str | os.PathLike) -> SigningIdentity:
        """Load the key at `path` (DER), or create it there with mode 0600 if it does not exist."""
        path = Path(path)
        if not path.exists():
            key = RSAPrivateKey()
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as file:
                file.write(key.to_bytes())
            log.info("created signing key %s", path)
            return cls(key)
        return cls(_load_private_key(path))

    def owner_subkey(self, step: int | None = None) -> bytes:
        """The subkey only this identity can write: `[owner:<key>]`, or `...#<step>` for per-step keys."""
        base = RSASignatureValidator.PUBLIC_KEY_FORMAT.replace(b"_key_", self.public_key)
        return base if step is None else base + b"#%d" % step

    def __repr__(self) -> str:
        return f"SigningIdentity({self.fingerprint})"


def _load_private_key(path: Path) -> RSAPrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        loaded = serialization.load_der_private_key(path.read_bytes(), password=None)
    except ValueError as err:
        raise ValueError(f"signing key {path} is not a DER RSA private key ({err}); "
                         f"move it away to create a new one (peers must then pin the new fingerprint)") from None
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise ValueError(f"signing key {path} is not an RSA key; move it away to create a new one")
    key = RSAPrivateKey.__new__(RSAPrivateKey)
    key.__setstate__({"_private_key": path.read_bytes()})  # hivemind's own unpickling path (DER)
    return key


class OwnedSubkeysValidator(RecordValidatorBase):
    """Refuses records under a run's keys that name no owner, or that expire too far ahead.

    RSASignatureValidator alone lets through records that name no key at all; under our keys
    those would be unsigned, and a plain (non-dictionary) value with a later expiration would
    make every node refuse the peers' subkeys until it expired.
    """

    def __init__(self, run: str, max_ttl: float = MAX_RECORD_TTL):
        self.run = check_run_id(run)
        self.max_ttl = max_ttl
        self._key_ids = {DHTID.generate(source=key).to_bytes(): key for key in all_keys(run)}

    def validate(self, record: DHTRecord) -> bool:
        key = self._key_ids.get(record.key)
        if key is None:
            return True  # not ours: other validators decide
        if record.expiration_time > get_dht_time() + self.max_ttl:
            log.debug("refused %s record expiring in more than %.0f s", key, self.max_ttl)
            return False
        if record.subkey == DHTProtocol.IS_REGULAR_VALUE:
            log.debug("refused a plain value under %s (only owned subkeys are allowed)", key)
            return False
        try:
            parse_subkey(DHTProtocol.serializer.loads(record.subkey))
        except Exception as err:  # any undecodable subkey is refused, never raised into hivemind
            log.debug("refused %s record: %s", key, err)
            return False
        return True

    def merge_with(self, other: RecordValidatorBase) -> bool:
        if isinstance(other, OwnedSubkeysValidator) and other.max_ttl == self.max_ttl:
            self._key_ids.update(other._key_ids)  # several runs in one DHT
            return True
        return False


def build_record_validators(identity: SigningIdentity, run: str) -> list[RecordValidatorBase]:
    """Validators every rankswarm DHT process must run (pass to hivemind.DHT / swarm_dht.start_dht)."""
    return [RSASignatureValidator(identity.private_key), OwnedSubkeysValidator(run)]
