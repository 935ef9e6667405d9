"""Bearer secrets (agent tokens, pool enrollment tokens): random, shown once, stored as SHA-256.

A SHA-256 of a 256-bit random token needs no salt or slow hash: it cannot be guessed, and looking
a token up by its hash leaks nothing about other tokens' values.
"""

import hashlib
import secrets


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def token_new(prefix: str) -> tuple[str, str]:
    """A new token and its hash. The prefix tells a reader what kind of secret leaked."""
    token = f"{prefix}_{secrets.token_urlsafe(32)}"
    return token, token_hash(token)


def token_matches(token: str, expected_hash: str) -> bool:
    return bool(expected_hash) and secrets.compare_digest(token_hash(token), expected_hash)
