"""Jinja prompt templates from `prompts/`, rendered in a sandbox.

Templates can read only the variables they are given: no attribute tricks, no
file or module access (Jinja's ImmutableSandboxedEnvironment). A variable the
caller does not provide is an error that names the template and the variable.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from rest_loop.config import ConfigError


class TemplateError(ConfigError):
    """A template is missing, does not parse, or uses a variable it is not given."""

    what = "template error"


@lru_cache(maxsize=None)
def _environment(root: str) -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(
        loader=jinja2.FileSystemLoader(root),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
        autoescape=False,
    )


class Template:
    """A template file under a prompts root, e.g. Template(prompts_dir, "judge/pointwise.j2")."""

    def __init__(self, root: str | Path, name: str):
        self.root, self.name = str(Path(root).expanduser()), name
        path = Path(self.root) / name
        if not path.is_file():
            near = sorted(p.name for p in path.parent.glob("*.j2")) if path.parent.is_dir() else []
            there = f"; {path.parent} has {', '.join(near)}" if near else ""
            raise TemplateError(f"template {name!r} not found under {self.root} (paths.prompts){there}")
        try:
            self._template = _environment(self.root).get_template(name)
        except jinja2.TemplateSyntaxError as e:
            raise TemplateError(f"{path}:{e.lineno}: {e.message}") from None
        self.source = path.read_text(encoding="utf-8")

    def render(self, **variables: Any) -> str:
        try:
            return self._template.render(**variables).strip()
        except jinja2.UndefinedError as e:
            raise TemplateError(
                f"{Path(self.root) / self.name}: {e.message}; variables given: {sorted(variables)}"
            ) from None

    @property
    def version(self) -> str:
        """Name plus a short content hash, recorded with every judgement it produced."""
        import hashlib

        return f"{self.name}@{hashlib.sha256(self.source.encode()).hexdigest()[:8]}"
