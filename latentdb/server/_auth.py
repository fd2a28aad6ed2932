"""API keys: where they come from, how they are checked, what each may do.

A key is written ``KEY``, ``KEY:SCOPE`` or ``KEY:SCOPE:COLLECTION,COLLECTION``:

- ``SCOPE`` is ``read`` (reads only) or ``write`` (reads and writes; the default);
- the collections, when given, are the only names (collections or aliases) the key may
  touch; database-wide calls (``list_collections``, ``list_aliases``) then show only
  those names.

Keys come from ``--api-key`` (repeatable), a keys file (one key per line, ``#``
comments) and the ``LATENTDB_API_KEYS`` environment variable (keys separated by
whitespace or ``;``). Only their SHA-256 digests are kept, and a presented key is
compared with every one of them in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from latentdb.errors import AuthError, ForbiddenError, InvalidArgumentError

__all__ = ["ENV_KEYS", "ApiKey", "Keyring", "Scope"]

Scope = Literal["read", "write"]
ENV_KEYS = "LATENTDB_API_KEYS"
# Shorter keys can be guessed; `python -c "import secrets; print(secrets.token_urlsafe())"`
# makes a 43-character one.
MIN_KEY_LENGTH = 16
_KEY = re.compile(r"[A-Za-z0-9._~+/=-]+")


@dataclass(frozen=True)
class ApiKey:
    """One key's rights (the key itself is kept only as its digest).

    Attributes:
        digest: SHA-256 of the key.
        scope: "read" or "write" (which includes read).
        collections: The only collection or alias names it may use; None for all.
        source: Where it was read from, for messages.
    """

    digest: bytes
    scope: Scope
    collections: frozenset[str] | None
    source: str

    @classmethod
    def parse(cls, text: str, source: str) -> ApiKey:
        """A key from its ``KEY[:SCOPE[:COLLECTION,...]]`` form.

        Raises:
            InvalidArgumentError: malformed, too short, or an unknown scope.
        """
        key, _, rest = text.strip().partition(":")
        scope_text, _, names = rest.partition(":")
        if not _KEY.fullmatch(key) or len(key) < MIN_KEY_LENGTH:
            raise InvalidArgumentError(
                f"API key from {source} must be at least {MIN_KEY_LENGTH} characters of "
                "letters, digits and ._~+/=- (written KEY[:read|write[:COLLECTION,...]])"
            )
        scope = scope_text or "write"
        if scope not in ("read", "write"):
            raise InvalidArgumentError(
                f"API key from {source}: scope must be 'read' or 'write'; got {scope!r}"
            )
        collections = None
        if names:
            collections = frozenset(name.strip() for name in names.split(",") if name.strip())
        return cls(
            digest=hashlib.sha256(key.encode()).digest(),
            scope="read" if scope == "read" else "write",
            collections=collections,
            source=source,
        )

    def allows(self, collection: str) -> bool:
        """Whether this key may use the collection or alias ``collection``."""
        return self.collections is None or collection in self.collections

    def check(self, *, write: bool, collection: str | None = None) -> None:
        """Refuse a call this key may not make.

        Raises:
            ForbiddenError: a write with a read-only key, or another collection.
        """
        if write and self.scope != "write":
            raise ForbiddenError("this API key is read-only: writes need a key with scope 'write'")
        if collection is not None and not self.allows(collection):
            raise ForbiddenError(f"this API key may not use collection {collection!r}")


class Keyring:
    """The keys a server accepts."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self.keys = tuple(keys)

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def load(
        cls,
        keys: Iterable[str] = (),
        *,
        keys_file: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Keyring:
        """Keys from the command line, a keys file and the environment, together.

        Raises:
            InvalidArgumentError: a malformed key, or a keys file that cannot be read.
        """
        found = [ApiKey.parse(text, "--api-key") for text in keys]
        if keys_file is not None:
            path = Path(keys_file)
            try:
                lines = path.read_text().splitlines()
            except OSError as error:
                raise InvalidArgumentError(f"cannot read keys file {path}: {error}") from None
            for number, line in enumerate(lines, start=1):
                text = line.split("#", 1)[0].strip()
                if text:
                    found.append(ApiKey.parse(text, f"{path} line {number}"))
        variable = (os.environ if environ is None else environ).get(ENV_KEYS, "")
        for text in re.split(r"[\s;]+", variable):
            if text:
                found.append(ApiKey.parse(text, ENV_KEYS))
        return cls(found)

    def find(self, presented: str | None) -> ApiKey:
        """The key presented, compared with each known one in constant time.

        Raises:
            AuthError: no key, or one this server does not know.
        """
        if not presented:
            raise AuthError(
                "an API key is required: send it as 'Authorization: Bearer KEY' "
                "(latentdb.connect(url, api_key=KEY))"
            )
        digest = hashlib.sha256(presented.encode()).digest()
        match = None
        for key in self.keys:  # no early exit: the time does not say which key matched
            if hmac.compare_digest(key.digest, digest):
                match = key
        if match is None:
            raise AuthError("the API key is not valid for this server")
        return match
