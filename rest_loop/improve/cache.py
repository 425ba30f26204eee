"""An on-disk cache of judge replies, shared by runs and sweeps on one machine.

The key is a hash of (judge model, rendered messages, sampling params, attempt):
re-scoring after a crash, in a resumed run or in a sweep over filter settings
asks the judge nothing it has already answered. Only real answers are stored:
an unparsable answer is an answer, a failed request is not.

SQLite (stdlib) in WAL mode: every reply is committed as it arrives, so a killed
run loses at most the requests in flight, and parallel sweep jobs can share it.

    >>> c = ReplyCache(":memory:")
    >>> k = cache_key({"model": "m"}, {"messages": [], "max_tokens": 1})
    >>> c.get(k) is None, c.put(k, {"text": "7"}), c.get(k)
    (True, None, {'text': '7'})
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any


def cache_key(identity: dict[str, Any], request: dict[str, Any]) -> str:
    blob = json.dumps({"judge": identity, "request": request}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class ReplyCache:
    def __init__(self, path: str | Path):
        if str(path) != ":memory:":
            path = Path(path).expanduser()
            path.parent.mkdir(parents=True, exist_ok=True)
        self.path = str(path)
        self._lock = threading.Lock()  # one connection, shared by the client's worker threads
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, reply TEXT, created REAL)")

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT reply FROM replies WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, reply: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO replies VALUES (?, ?, ?)",
                             (key, json.dumps(reply, ensure_ascii=False), time.time()))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]
