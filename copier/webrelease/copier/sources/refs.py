"""Looking up the Kubernetes objects a customer source refers to: Secrets and ConfigMaps.

The data plane cannot talk to the Kubernetes API, so it asks through these protocols: the operator
implements them with the API; local runs (``webrelease run``) use ``DirectorySecrets`` — a folder
laid out like mounted Secret volumes, ``<root>/<secret name>/<key>`` — or ``MappingSecrets``.

Errors name the object and the key, never a value.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from webrelease.copier.sources.base import SourceError


class MissingReference(SourceError):
    """A Secret, ConfigMap or key that a source refers to does not exist (or cannot be read)."""

    def __init__(self, message: str, where: str = "reference") -> None:
        super().__init__(where, message)


class SecretReader(Protocol):
    def secret_value(self, name: str, key: str) -> str:
        """The value of ``key`` in Secret ``name``; raises MissingReference."""
        ...


class ConfigMapReader(Protocol):
    def config_map_value(self, name: str, key: str) -> str | bytes:
        """``data[key]`` (str) or ``binaryData[key]`` (bytes) of ConfigMap ``name``.

        Raises MissingReference."""
        ...


def missing_secret(name: str, key: str, keys: list[str] | None) -> MissingReference:
    """The error for a Secret that does not exist (``keys`` is None) or lacks ``key``."""
    if keys is None:
        return MissingReference(f"Secret {name!r} not found", "Secret")
    shown = ", ".join(sorted(keys)) or "none"
    return MissingReference(f"Secret {name!r} has no key {key!r} (its keys: {shown})", "Secret")


def missing_config_map(name: str, key: str, keys: list[str] | None) -> MissingReference:
    if keys is None:
        return MissingReference(f"ConfigMap {name!r} not found", "ConfigMap")
    shown = ", ".join(sorted(keys)) or "none"
    return MissingReference(f"ConfigMap {name!r} has no key {key!r} (its keys: {shown})", "ConfigMap")


class MappingSecrets:
    """Secrets held in memory: ``{name: {key: value}}``."""

    def __init__(self, secrets: Mapping[str, Mapping[str, str]]) -> None:
        self._secrets = secrets

    def __repr__(self) -> str:
        return f"MappingSecrets(names={sorted(self._secrets)})"

    def secret_value(self, name: str, key: str) -> str:
        secret = self._secrets.get(name)
        if secret is None:
            raise missing_secret(name, key, None)
        if key not in secret:
            raise missing_secret(name, key, list(secret))
        return secret[key]


class DirectorySecrets:
    """Secrets as files: ``<root>/<name>/<key>`` (the layout of a mounted Secret volume)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def secret_value(self, name: str, key: str) -> str:
        if "/" in name or "/" in key or name in {".", ".."} or key in {".", ".."}:
            raise MissingReference(f"Secret {name!r} key {key!r}: not a valid name", "Secret")
        folder = self.root / name
        if not folder.is_dir():
            raise missing_secret(name, key, None)
        path = folder / key
        if not path.is_file():
            raise missing_secret(name, key, [p.name for p in folder.iterdir() if not p.name.startswith("..")])
        try:
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise MissingReference(
                f"Secret {name!r} key {key!r}: cannot read: {type(exc).__name__}"
            ) from None
