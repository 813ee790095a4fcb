"""A process's signing identity and the DHT record validators every rankswarm process runs.

`SigningIdentity` is an RSA key pair kept in a file (DER, mode 0600); its fingerprint is the
peer id (or coordinator key) others pin. Records are signed inside hivemind: its
`RSASignatureValidator` signs what this process stores under an `[owner:<its key>]` subkey
and refuses, on every node, a record under such a subkey that the named key did not sign.
`OwnedSubkeysValidator` adds what rankswarm's keys need on top (see `plumbing.dht_keys`).
"""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hivemind.dht.crypto import RSASignatureValidator
from hivemind.dht.protocol import DHTProtocol
from hivemind.dht.routing import DHTID
from hivemind.dht.validation import DHTRecord, RecordValidatorBase
from hivemind.utils import get_dht_time
from hivemind.utils.crypto import PrivateKey, RSAPublicKey

from plumbing.dht_keys import MAX_RECORD_TTL, all_keys, check_run_id, fingerprint, owner_subkey, parse_subkey

log = logging.getLogger(__name__)

RSA_KEY_BITS = 2048


class StoredRSAKey(PrivateKey):
    """An RSA private key that hivemind can sign with, built from a key we hold (generated or read from disk).

    hivemind's own `RSAPrivateKey` can only generate a key; restoring one from a file would mean
    writing its private attributes. This implements hivemind's public `PrivateKey` interface
    instead, with the signature scheme its `RSAPublicKey.verify` checks (RSA-PSS, MGF1-SHA256,
    maximal salt, SHA-256, base64); tests/plumbing/test_identity.py pins that the two agree."""

    def __init__(self, key: rsa.RSAPrivateKey):
        self.key = key

    @classmethod
    def generate(cls) -> StoredRSAKey:
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS))

    def sign(self, data: bytes) -> bytes:
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH)
        return base64.b64encode(self.key.sign(data, pss, hashes.SHA256()))

    def get_public_key(self) -> RSAPublicKey:
        return RSAPublicKey(self.key.public_key())

    def to_bytes(self) -> bytes:
        """DER (PKCS#1), as the key file stores it."""
        return self.key.private_bytes(encoding=serialization.Encoding.DER,
                                      format=serialization.PrivateFormat.TraditionalOpenSSL,
                                      encryption_algorithm=serialization.NoEncryption())

    # validators travel to hivemind's DHT process by pickle; cryptography's key objects do not pickle
    def __getstate__(self) -> dict:
        return {"der": self.to_bytes()}

    def __setstate__(self, state: dict) -> None:
        self.key = serialization.load_der_private_key(state["der"], password=None)


class SigningIdentity:
    """An RSA key pair that signs this process's DHT records; its fingerprint is its peer id."""

    def __init__(self, private_key: StoredRSAKey):
        self.private_key = private_key
        self.public_key: bytes = private_key.get_public_key().to_bytes()
        self.fingerprint: str = fingerprint(self.public_key)

    @classmethod
    def generate(cls) -> SigningIdentity:
        """A fresh identity (tests, throwaway peers); its fingerprint changes on every start."""
        return cls(StoredRSAKey.generate())

    @classmethod
    def load_or_create(cls, path: str | os.PathLike) -> SigningIdentity:
        """Load the key at `path` (DER), or create it there with mode 0600 if it does not exist."""
        path = Path(path)
        if not path.exists():
            key = StoredRSAKey.generate()
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as file:
                file.write(key.to_bytes())
            log.info("created signing key %s", path)
            return cls(key)
        return cls(_load_private_key(path))

    def owner_subkey(self, step: int | None = None) -> bytes:
        """The subkey only this identity can write: `[owner:<key>]`, or `...#<step>` for per-step keys."""
        return owner_subkey(self.public_key, step)

    def __repr__(self) -> str:
        return f"SigningIdentity({self.fingerprint})"


def _load_private_key(path: Path) -> StoredRSAKey:
    try:
        loaded = serialization.load_der_private_key(path.read_bytes(), password=None)
    except ValueError as err:
        raise ValueError(f"signing key {path} is not a DER RSA private key ({err}); "
                         f"move it away to create a new one (peers must then pin the new fingerprint)") from None
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise ValueError(f"signing key {path} is not an RSA key; move it away to create a new one")
    return StoredRSAKey(loaded)


class OwnedSubkeysValidator(RecordValidatorBase):
    """Refuses records under a run's keys that name no owner, or that expire too far ahead.

    RSASignatureValidator alone lets through records that name no key at all; under our keys
    those would be unsigned, and a plain (non-dictionary) value with a later expiration would
    make every node refuse the peers' subkeys until it expired.
    """

    def __init__(self, run: str, max_ttl: float = MAX_RECORD_TTL):
        self.run = check_run_id(run)
        self.max_ttl = max_ttl
        self.key_ids = {DHTID.generate(source=key).to_bytes(): key for key in all_keys(run)}

    def validate(self, record: DHTRecord) -> bool:
        key = self.key_ids.get(record.key)
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
            self.key_ids.update(other.key_ids)  # several runs in one DHT
            return True
        return False


def build_record_validators(identity: SigningIdentity, run: str) -> list[RecordValidatorBase]:
    """Validators every rankswarm DHT process must run (pass to hivemind.DHT / swarm_dht.start_dht)."""
    return [RSASignatureValidator(identity.private_key), OwnedSubkeysValidator(run)]
