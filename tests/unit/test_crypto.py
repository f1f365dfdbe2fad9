from __future__ import annotations

import pytest

from core.config import Config, ConfigError
from core.crypto import DecryptionError, TokenCipher, generate_key


def test_encrypt_then_decrypt_returns_the_token_and_ciphertexts_differ():
    cipher = TokenCipher(generate_key())
    first, second = cipher.encrypt("refresh-token-123"), cipher.encrypt("refresh-token-123")
    assert first != second
    assert "refresh-token-123" not in first
    assert cipher.decrypt(first) == cipher.decrypt(second) == "refresh-token-123"


def test_given_wrong_key_when_decrypting_then_error_says_which_setting_to_fix():
    sealed = TokenCipher(generate_key()).encrypt("secret")
    with pytest.raises(DecryptionError, match="FIELDWISE_ENCRYPTION_KEY"):
        TokenCipher(generate_key()).decrypt(sealed)


def test_given_tampered_value_when_decrypting_then_refused():
    cipher = TokenCipher(generate_key())
    sealed = cipher.encrypt("secret")
    tampered = sealed[:-5] + ("A" if sealed[-5] != "A" else "B") + sealed[-4:]
    with pytest.raises(DecryptionError):
        cipher.decrypt(tampered)


def test_given_rotated_keys_then_old_values_open_and_rotate_to_the_new_key():
    old, new = generate_key(), generate_key()
    sealed_old = TokenCipher(old).encrypt("token")
    both = TokenCipher(f"{new},{old}")
    assert both.decrypt(sealed_old) == "token"
    rotated = both.rotate(sealed_old)
    assert TokenCipher(new).decrypt(rotated) == "token"


def test_given_no_key_outside_demo_when_building_cipher_then_clear_configuration_error():
    with pytest.raises(ConfigError, match="FIELDWISE_ENCRYPTION_KEY is not set"):
        TokenCipher.from_config(Config.from_env({}, require_secrets=False))


def test_demo_configuration_always_has_a_working_key():
    cipher = TokenCipher.from_config(Config.for_demo())
    assert cipher.decrypt(cipher.encrypt("x")) == "x"
