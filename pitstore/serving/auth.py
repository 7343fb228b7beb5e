"""API keys for the scoring API, and the card-number tokens of its records.

Keys: a caller sends ``Authorization: Bearer <key>``. The server holds only
each key's SHA-256 (settings ``api_keys`` / ``api_keys_file``), with a name
(for logs and metrics: never the key) and its scopes. Why a plain SHA-256 and
not a slow password hash: a key is 256 random bits (``new_key``), so nobody
can brute-force it from its hash, and a request pays ~1 µs for the check.
The presented key's hash is compared with *every* configured hash with
``hmac.compare_digest`` (no early exit), so the time taken says nothing about
which, or how much of, a hash matched.

Card tokens: ``card_id`` is replaced by ``tok_<HMAC-SHA256(key, card_id)[:32 hex]>``
as soon as the request is validated, so a PAN (or any card identifier) never
reaches the audit log, a response or a log line; the same card always gets the
same token (under the same key), so investigators can still link decisions.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

SCOPES = ("score", "prescreen", "decisions:read")
KEY_PREFIX = "psk_"
TOKEN_PREFIX = "tok_"
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_HASH = re.compile(r"^[0-9a-f]{64}$")


class KeyConfigError(ValueError):
    """An api_keys entry (or the card-token key) is malformed: the server must not start."""


@dataclass(frozen=True)
class ApiKey:
    name: str
    digest: bytes  # sha256 of the key
    scopes: frozenset[str]


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def entry_for(name: str, key: str, scopes: list[str]) -> str:
    """The api_keys entry (no secret in it) for ``key``."""
    return f"{name}:{key_digest(key).hex()}:{','.join(scopes)}"


def parse_entries(text: str, origin: str) -> list[ApiKey]:
    keys: list[ApiKey] = []
    for n, raw in enumerate(re.split(r"[;\n]", text), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split(":", 2)
        if len(parts) != 3:
            raise KeyConfigError(f"{origin} entry {n}: expected <name>:<sha256 hex>:<scopes>")
        name, digest, scope_text = (p.strip() for p in parts)
        if not _NAME.match(name):
            raise KeyConfigError(f"{origin} entry {n}: bad key name {name!r}")
        if not _HASH.match(digest):
            raise KeyConfigError(
                f"{origin} entry {n} ({name}): the key's hash must be 64 lowercase hex "
                "digits (put the hash here, never the key)"
            )
        scopes = frozenset(s.strip() for s in scope_text.split(",") if s.strip())
        unknown = scopes - set(SCOPES)
        if not scopes or unknown:
            raise KeyConfigError(
                f"{origin} entry {n} ({name}): scopes must be among {', '.join(SCOPES)}"
            )
        keys.append(ApiKey(name, bytes.fromhex(digest), scopes))
    return keys


class KeyRing:
    def __init__(self, keys: list[ApiKey]) -> None:
        self.keys = keys

    @classmethod
    def load(cls, inline: str, path: Path | None) -> KeyRing:
        keys = parse_entries(inline, "PITSTORE_API_KEYS")
        if path is not None:
            try:
                text = path.read_text()
            except OSError as exc:
                raise KeyConfigError(f"api_keys_file {path}: {exc.strerror}") from exc
            keys += parse_entries(text, str(path))
        return cls(keys)

    def find(self, authorization: bytes | None) -> ApiKey | None:
        """The key an ``Authorization`` header value carries, or None."""
        if not authorization or not self.keys:
            return None
        scheme, _, token = authorization.partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            return None
        digest = hashlib.sha256(token.strip()).digest()
        found = None
        for key in self.keys:  # all of them, always: the time taken reveals nothing
            if hmac.compare_digest(digest, key.digest):
                found = key
        return found


# --- card tokens -------------------------------------------------------------


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def looks_like_pan(value: str) -> bool:
    """13-19 digits (spaces/dashes ignored) passing the Luhn check."""
    digits = value.replace(" ", "").replace("-", "")
    return 13 <= len(digits) <= 19 and digits.isdigit() and luhn_ok(digits)


class CardTokenizer:
    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise KeyConfigError("card_token_key must be at least 32 bytes (64 hex digits)")
        self._key = key

    def __call__(self, card_id: str) -> str:
        mac = hmac.new(self._key, card_id.encode(), hashlib.sha256).hexdigest()
        return TOKEN_PREFIX + mac[:32]  # 128 bits: collision-free at any card count

    @classmethod
    def from_settings(cls, hex_key: str, home: Path) -> CardTokenizer:
        """The configured key, else the one generated into <home>/secrets once."""
        if hex_key:
            try:
                return cls(bytes.fromhex(hex_key))
            except ValueError as exc:
                raise KeyConfigError("card_token_key must be hex") from exc
        path = home / "secrets" / "card-token.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            try:  # O_EXCL: two processes starting at once keep the first one's key
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "w") as fh:
                    fh.write(secrets.token_hex(32) + "\n")
                    fh.flush()
                    os.fsync(fh.fileno())
        try:
            return cls(bytes.fromhex(path.read_text().strip()))
        except ValueError as exc:
            raise KeyConfigError(f"{path} does not hold a hex key") from exc
