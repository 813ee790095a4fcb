"""The signing key hivemind signs our records with: built from a key we hold, accepted by hivemind."""

import pickle

import pytest
from hivemind.dht.crypto import RSASignatureValidator
from hivemind.dht.protocol import DHTProtocol
from hivemind.dht.routing import DHTID
from hivemind.dht.validation import DHTRecord
from hivemind.utils import get_dht_time
from hivemind.utils.crypto import RSAPublicKey

from plumbing.dht_keys import OWNER_SUBKEY_FORMAT, meta_signals_key
from plumbing.identity import SigningIdentity

pytestmark = pytest.mark.unit


def test_our_owner_subkey_is_the_one_hivemind_protects():
    identity = SigningIdentity.generate()
    assert OWNER_SUBKEY_FORMAT % identity.public_key == RSASignatureValidator.PUBLIC_KEY_FORMAT.replace(
        b"_key_", identity.public_key)


def test_hivemind_verifies_what_a_stored_key_signs(tmp_path):
    identity = SigningIdentity.load_or_create(tmp_path / "peer.key")
    reloaded = SigningIdentity.load_or_create(tmp_path / "peer.key")  # the key read back from its file
    public = RSAPublicKey.from_bytes(identity.public_key)
    assert public.verify(b"record", reloaded.private_key.sign(b"record"))
    assert not public.verify(b"another record", reloaded.private_key.sign(b"record"))
    assert not RSAPublicKey.from_bytes(SigningIdentity.generate().public_key).verify(
        b"record", reloaded.private_key.sign(b"record"))


def test_a_record_signed_with_a_stored_key_passes_hiveminds_validator_and_a_forgery_does_not(tmp_path):
    owner = SigningIdentity.load_or_create(tmp_path / "owner.key")
    signer = RSASignatureValidator(pickle.loads(pickle.dumps(owner.private_key)))  # as it reaches the DHT process
    subkey = DHTProtocol.serializer.dumps(owner.owner_subkey(step=1))
    record = DHTRecord(DHTID.generate(source=meta_signals_key("r")).to_bytes(), subkey,
                       DHTProtocol.serializer.dumps({"step": 1}), get_dht_time() + 60)
    signed = record.__class__(record.key, record.subkey, signer.sign_value(record), record.expiration_time)
    assert RSASignatureValidator(SigningIdentity.generate().private_key).validate(signed)
    forged = RSASignatureValidator(SigningIdentity.generate().private_key)  # a key that does not own the subkey
    forged_record = record.__class__(record.key, record.subkey, forged.sign_value(record), record.expiration_time)
    assert not signer.validate(forged_record)
