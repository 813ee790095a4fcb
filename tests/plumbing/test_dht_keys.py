"""DHT keys, owner subkeys, signing identities and the ownership validator (no network)."""

import os

import pytest
from hivemind.dht.crypto import RSASignatureValidator
from hivemind.dht.protocol import DHTProtocol
from hivemind.dht.routing import DHTID
from hivemind.dht.validation import DHTRecord
from hivemind.utils import get_dht_time

from plumbing.dht_keys import all_keys, check_run_id, describe_subkey, meta_signals_key, parse_subkey
from plumbing.identity import OwnedSubkeysValidator, SigningIdentity

IDENTITY = SigningIdentity.generate()


@pytest.mark.unit
def test_run_ids_name_keys_or_say_the_rule():
    assert meta_signals_key("gsm8k-01") == "gsm8k-01.meta_signals"
    assert len(set(all_keys("r"))) == 5
    for bad in ("", "a.b", "with space", "x" * 65):
        with pytest.raises(ValueError, match="1-64 characters"):
            check_run_id(bad)


@pytest.mark.unit
def test_owner_subkeys_parse_back_to_their_owner_and_step():
    assert parse_subkey(IDENTITY.owner_subkey()).owner == IDENTITY.fingerprint
    parsed = parse_subkey(IDENTITY.owner_subkey(step=42))
    assert (parsed.owner, parsed.step) == (IDENTITY.fingerprint, 42)
    assert describe_subkey(IDENTITY.owner_subkey(step=42)) == f"{IDENTITY.fingerprint}#42"
    for bad in (b"mallory", "text", IDENTITY.owner_subkey() + b"#x", b"[owner:not a key]"):
        with pytest.raises(ValueError):
            parse_subkey(bad)


@pytest.mark.unit
def test_the_signature_validator_recognises_our_subkeys():
    # hivemind protects any record whose (serialized) subkey contains its public-key pattern
    validator = RSASignatureValidator(IDENTITY.private_key)
    assert validator.local_public_key in DHTProtocol.serializer.dumps(IDENTITY.owner_subkey(step=3))


@pytest.mark.unit
def test_signing_key_persists_with_private_permissions(tmp_path):
    path = tmp_path / "keys" / "coordinator.key"
    first = SigningIdentity.load_or_create(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert SigningIdentity.load_or_create(path).fingerprint == first.fingerprint
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a DER RSA private key"):
        SigningIdentity.load_or_create(path)


def _record(key: str, subkey, expires_in: float = 60.0) -> DHTRecord:
    subkey_bytes = DHTProtocol.IS_REGULAR_VALUE if subkey is None else DHTProtocol.serializer.dumps(subkey)
    return DHTRecord(DHTID.generate(source=key).to_bytes(), subkey_bytes, b"\x80", get_dht_time() + expires_in)


@pytest.mark.unit
def test_ownership_validator_refuses_unowned_plain_and_far_future_records():
    validator = OwnedSubkeysValidator("r")
    key = meta_signals_key("r")
    assert validator.validate(_record(key, IDENTITY.owner_subkey(step=1)))
    assert not validator.validate(_record(key, b"mallory"))
    assert not validator.validate(_record(key, None))  # a plain value would shadow the dictionary
    assert not validator.validate(_record(key, IDENTITY.owner_subkey(step=1), expires_in=30 * 86400))
    assert validator.validate(_record("someone-elses.key", None))
    other_run = OwnedSubkeysValidator("r2")
    assert validator.merge_with(other_run)
    assert not validator.validate(_record(meta_signals_key("r2"), b"mallory"))
