"""Bearer tokens, stored only as salted hashes.

A token is hashed with PBKDF2-HMAC-SHA256 under a random 16-byte salt; the stored form
names the scheme and its parameters, so the cost can be raised later without breaking the
hashes already written::

    pbkdf2_sha256$<iterations>$<salt, base64>$<digest, base64>

``featureledger policy token-hash`` prints the hash of a token (a new random one when none
is given) for the policy file; the token itself is never written anywhere by featureledger.
Checking a token compares digests in constant time.

>>> stored = hash_token("s3cret-token", iterations=1000)
>>> stored.startswith("pbkdf2_sha256$1000$")
True
>>> verify_token("s3cret-token", stored), verify_token("guess", stored)
(True, False)
>>> is_token_hash("s3cret-token")
False
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

SCHEME = "pbkdf2_sha256"
ITERATIONS = 200_000
"""PBKDF2 rounds of a new hash (a server checks each token once, then caches the result)."""
MIN_TOKEN_CHARS = 16
_HASH_RE = re.compile(r"^pbkdf2_sha256\$(\d{3,9})\$([A-Za-z0-9+/=]{16,64})\$([A-Za-z0-9+/=]{40,64})$")


def new_token() -> str:
    """A new random token (256 bits, URL-safe)."""
    return "flt_" + secrets.token_urlsafe(32)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hash_token(token: str, *, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    """The salted hash of ``token`` in the stored form."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", token.encode(), salt, iterations)
    return f"{SCHEME}${iterations}${_b64(salt)}${_b64(digest)}"


def is_token_hash(text: str) -> bool:
    """Whether ``text`` is a hash in the stored form (not a token in plain text)."""
    return bool(_HASH_RE.match(text))


def verify_token(token: str | bytes, stored: str) -> bool:
    """Whether ``token`` hashes to ``stored`` (constant-time comparison)."""
    m = _HASH_RE.match(stored)
    if m is None:
        return False
    iterations, salt, digest = int(m.group(1)), base64.b64decode(m.group(2)), m.group(3)
    raw = token.encode() if isinstance(token, str) else token
    got = hashlib.pbkdf2_hmac("sha256", raw, salt, iterations)
    return hmac.compare_digest(_b64(got), digest)
