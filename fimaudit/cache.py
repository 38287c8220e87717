"""An on-disk cache of derived results (the bounds' layer gains), safe to share and to lose.

Why: a model's global bound depends only on its weights, yet its conv spectral norms cost
seconds to minutes (a VGG-11 classifier is a 4096 x 25088 matrix) on every audit of it. The
cache keeps them between runs, keyed by what decides them: the SHA-256 of the model's bytes,
the derivation's own inputs, and fimaudit's version (a release that changes a rule changes
the key, so no stale entry is ever read).

Safety:
- Writes are atomic: a temporary file in the same folder, flushed, then ``os.replace``. Two
  processes writing one key each leave one complete entry; a reader never sees half of one.
- A corrupted, truncated or foreign entry is ignored (and the value derived again): the
  entry must parse as JSON, name its own key, and carry the expected format. Nothing read from
  the cache is trusted further than that: it holds numbers fimaudit wrote for this user.
- An unwritable cache folder is a warning, never an error: the audit does not depend on it.
- ``--no-cache`` (``enabled=False``) neither reads nor writes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import fimaudit

logger = logging.getLogger(__name__)

#: Bumped when the layout of an entry changes (the version of fimaudit is part of every key too).
FORMAT = 1


def default_directory() -> Path:
    """``<user cache dir>/fimaudit`` (platformdirs: ~/.cache/fimaudit on Linux, honours XDG_CACHE_HOME)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("fimaudit", appauthor=False))


def digest(*parts: bytes | str) -> str:
    """SHA-256 over the parts, each length-prefixed (so ("ab", "c") and ("a", "bc") differ)."""
    hasher = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8") if isinstance(part, str) else part
        hasher.update(len(data).to_bytes(8, "little"))
        hasher.update(data)
    return hasher.hexdigest()


class ResultCache:
    """JSON entries under ``directory/namespace``, one file per key."""

    def __init__(self, namespace: str, directory: Path | None = None, enabled: bool = True) -> None:
        self.enabled = enabled
        self.folder = (directory or default_directory()) / namespace

    def key(self, *parts: bytes | str) -> str:
        """The key of a result derived from ``parts`` by this version of fimaudit."""
        return digest(f"fimaudit {fimaudit.__version__}", f"format {FORMAT}", *parts)

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored value, or None when absent, disabled, unreadable or corrupted."""
        if not self.enabled:
            return None
        path = self._path(key)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            logger.info("cache entry %s ignored (%s)", path, exc)
            return None
        if not isinstance(entry, dict) or entry.get("key") != key or entry.get("format") != FORMAT:
            logger.info("cache entry %s ignored (not an entry of this key and format)", path)
            return None
        value = entry.get("value")
        return value if isinstance(value, dict) else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        """Store ``value`` (JSON-serialisable) atomically; a failure is logged, never raised."""
        if not self.enabled:
            return
        text = json.dumps({"format": FORMAT, "key": key, "value": value})
        temporary: str | None = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(
                "w", encoding="utf-8", dir=self.folder, prefix=".tmp-", suffix=".json", delete=False
            ) as handle:
                temporary = handle.name
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self._path(key))
            temporary = None
        except OSError as exc:
            logger.warning("could not write the cache entry under %s (%s); continuing without it", self.folder, exc)
        finally:
            if temporary is not None:
                Path(temporary).unlink(missing_ok=True)
