"""The audit log's evidence format: a hash chain per file and signed checkpoints.

Each record line ends with two fields the writer adds (the record's own keys
come first, unchanged)::

    {...the record...,"prev":"<64 hex>","hash":"<64 hex>"}

``hash = sha256(prev || body)`` where ``body`` is the line's bytes without
those two fields (``{...the record...}``), and ``prev`` is the previous
record's ``hash`` in the same file (the first record's ``prev`` is the file's
*genesis*, a hash of its name: a record moved to another file does not chain).
The suffix has a fixed length, so a verifier recovers ``body`` by slicing the
raw line: no JSON re-encoding, no canonical-form question.

Checkpoints go to a sidecar ``<file>.sig`` (JSON lines; the ``.jsonl`` holds
decisions alone, so every reader's queries stay as they were)::

    {"file": "day=D/part-....jsonl", "records": n, "last": "<hash of record n>",
     "reason": "open|periodic|rotate|close", "at": "...", "mac": "<hex>"}

``mac = HMAC-SHA256(key, file \\n records \\n last \\n reason)``. The key is
``PITSTORE_AUDIT_KEY`` if set, else ``<home>/audit.key`` (32 random bytes,
hex, mode 0600, created by the first writer).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pitstore.serving.settings import ServingSettings

HASH_HEX = 64
PREFIX = b',"prev":"'
MIDDLE = b'","hash":"'
END = b'"}\n'
SUFFIX_LEN = len(PREFIX) + HASH_HEX + len(MIDDLE) + HASH_HEX + len(END)
SUFFIX = re.compile(rb',"prev":"([0-9a-f]{64})","hash":"([0-9a-f]{64})"}\n\Z')
CHAIN_KEYS = ("prev", "hash")
CLOSING = frozenset({"rotate", "close"})
KEY_ENV = "PITSTORE_AUDIT_KEY"
MIN_KEY_BYTES = 16


class AuditKeyError(RuntimeError):
    """No usable audit key (missing, too short, or readable by others)."""


def genesis(name: str) -> bytes:
    """The ``prev`` of a file's first record: bound to the file's name."""
    return hashlib.sha256(b"pitstore-audit/1 " + name.encode()).hexdigest().encode()


def body(record: dict[str, Any]) -> bytes:
    """The record's JSON (no chain fields, no newline); NaN/inf are refused."""
    if not record or any(k in record for k in CHAIN_KEYS):
        raise ValueError(f"an audit record must be non-empty and not carry {CHAIN_KEYS}")
    return json.dumps(record, separators=(",", ":"), allow_nan=False).encode()


def link(data: bytes, prev: bytes) -> tuple[bytes, bytes]:
    """The chained line for ``data`` (a ``body``) after ``prev``, and its hash.

    One sha256 per record: the hot path's whole cost of the chain."""
    digest = hashlib.sha256(prev + data).hexdigest().encode()
    return data[:-1] + PREFIX + prev + MIDDLE + digest + END, digest


def unlink(line: bytes) -> tuple[bytes, bytes, bytes] | None:
    """``(body, prev, hash)`` of a chained line, or None if it carries no chain."""
    match = SUFFIX.search(line)
    if match is None:
        return None
    return line[: match.start()] + b"}", match.group(1), match.group(2)


def sign(key: bytes, file: str, records: int, last: bytes, reason: str) -> str:
    msg = f"{file}\n{records}\n{last.decode()}\n{reason}".encode()
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def signature_line(key: bytes, file: str, records: int, last: bytes, reason: str) -> bytes:
    entry = {
        "file": file,
        "records": records,
        "last": last.decode(),
        "reason": reason,
        "at": datetime.now(UTC).isoformat(),
        "mac": sign(key, file, records, last, reason),
    }
    return (json.dumps(entry, separators=(",", ":")) + "\n").encode()


def signature_valid(key: bytes, entry: dict[str, Any]) -> bool:
    try:
        expected = sign(
            key,
            str(entry["file"]),
            int(entry["records"]),
            str(entry["last"]).encode(),
            str(entry["reason"]),
        )
        return hmac.compare_digest(expected, str(entry["mac"]))
    except (KeyError, TypeError, ValueError):
        return False


def sig_path(path: Path) -> Path:
    return path.with_suffix(".sig")


# --- the key -----------------------------------------------------------------


def key_file(home: Path) -> Path:
    return home / "audit.key"


def load_key(path: Path, env_value: str | None = None, create: bool = False) -> bytes:
    """The HMAC key: ``env_value`` (PITSTORE_AUDIT_KEY) if given, else the file.

    With ``create`` a missing file is made (0600, 32 random bytes as hex); a
    file that group or others may read is refused, as a key anyone can read
    signs anything."""
    if env_value:
        key = env_value.encode()
        if len(key) < MIN_KEY_BYTES:
            raise AuditKeyError(f"{KEY_ENV} is shorter than {MIN_KEY_BYTES} bytes")
        return key
    if create and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first: read theirs
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise AuditKeyError(f"no audit key: set {KEY_ENV} or create {path}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AuditKeyError(
            f"audit key {path} is open to others (mode {mode & 0o777:o}): chmod 600"
        )
    key = path.read_bytes().strip()
    if len(key) < MIN_KEY_BYTES:
        raise AuditKeyError(f"audit key {path} is shorter than {MIN_KEY_BYTES} bytes")
    return key


def audit_key(settings: ServingSettings, create: bool = False) -> bytes:
    """The key for this home: PITSTORE_AUDIT_KEY, else ``<home>/audit.key``
    (made on first use if ``create``: the server does, ``audit verify`` never)."""
    secret = settings.audit_key.get_secret_value() if settings.audit_key else None
    return load_key(key_file(settings.resolved_home), secret, create=create)
