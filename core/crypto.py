"""Encryption of secrets at rest (OAuth access and refresh tokens).

Tokens are sealed with Fernet (AES-128-CBC plus HMAC-SHA256, from ``cryptography``) under the key in
``FIELDWISE_ENCRYPTION_KEY``. Several comma-separated keys allow rotation: the first encrypts, all of
them decrypt, and :meth:`TokenCipher.rotate` re-seals a value under the first key.
"""

from __future__ import annotations

import base64
import secrets

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from core.config import Config, ConfigError


class DecryptionError(Exception):
    """A stored secret could not be decrypted with any configured key."""


class TokenCipher:
    """Seals and opens secrets with the configured Fernet key(s)."""

    def __init__(self, keys: str) -> None:
        fernets = [Fernet(key.strip().encode()) for key in keys.split(",") if key.strip()]
        if not fernets:
            raise ConfigError(
                "FIELDWISE_ENCRYPTION_KEY is empty; create one with `fieldwise keygen`"
            )
        self._fernet = MultiFernet(fernets)

    @classmethod
    def from_config(cls, config: Config) -> TokenCipher:
        """Build the cipher from configuration.

        Raises:
            ConfigError: the key is missing; the demo configuration always has one.
        """
        if not config.encryption_key:
            raise ConfigError(
                "FIELDWISE_ENCRYPTION_KEY is not set: OAuth tokens are encrypted at rest with it; "
                "create one with `fieldwise keygen`"
            )
        return cls(config.encryption_key.reveal())

    def encrypt(self, plaintext: str) -> str:
        """Seal a secret; the result is url-safe ASCII and differs on every call."""
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str, ttl_s: int | None = None) -> str:
        """Open a sealed secret.

        Args:
            token: the sealed value.
            ttl_s: refuse values sealed longer ago than this (short-lived values such as OAuth state).

        Raises:
            DecryptionError: the value was sealed under a key that is no longer configured, or
                has been altered.
        """
        try:
            return self._fernet.decrypt(token.encode("ascii"), ttl=ttl_s).decode("utf-8")
        except (InvalidToken, UnicodeError, ValueError):
            raise DecryptionError(
                "a stored secret cannot be decrypted: it was encrypted with a key that is not in "
                "FIELDWISE_ENCRYPTION_KEY (keep the old key after the new one while rotating) "
                "or it has been altered or has expired"
            ) from None

    def rotate(self, token: str) -> str:
        """Re-seal a value under the first (newest) key."""
        try:
            return self._fernet.rotate(token.encode("ascii")).decode("ascii")
        except InvalidToken:
            raise DecryptionError("cannot rotate a value no configured key can open") from None


def generate_key() -> str:
    """A new random Fernet key, for ``FIELDWISE_ENCRYPTION_KEY``."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii")
