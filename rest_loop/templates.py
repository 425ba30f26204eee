"""Jinja prompt templates from `prompts/`, rendered in a sandbox.

Templates can read only the variables they are given: no attribute tricks, no
file or module access (Jinja's ImmutableSandboxedEnvironment). A variable the
caller does not provide is an error that names the template and the variable.

The prompts root may be several folders joined with os.pathsep (paths.prompts is the user's
`paths.user_prompts`, then the package's prompts/): a template is taken from the first that has
it, and its `{% include %}`s are looked up the same way.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import os

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from rest_loop.config import ConfigError


class TemplateError(ConfigError):
    """A template is missing, does not parse, or uses a variable it is not given."""

    what = "template error"


@lru_cache(maxsize=None)
def _environment(roots: tuple[str, ...]) -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(
        loader=jinja2.FileSystemLoader(list(roots)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
        autoescape=False,
    )


class Template:
    """A template file under a prompts root, e.g. Template(prompts_dir, "judge/pointwise.j2")."""

    def __init__(self, root: str | Path, name: str):
        roots = tuple(str(Path(r).expanduser()) for r in str(root).split(os.pathsep) if r)
        found = next((r for r in roots if (Path(r) / name).is_file()), None)
        if found is None:
            raise TemplateError(f"template {name!r} not found under {' or '.join(roots)} (paths.prompts)"
                                + "".join(nearby(Path(r) / name) for r in roots))
        self.root, self.name = found, name  # the folder it came from
        path = Path(found) / name
        try:
            self._template = _environment(roots).get_template(name)
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


def nearby(path: Path) -> str:
    """What the folder a missing template was looked for in does hold: "; <folder> has a.j2, b.j2"."""
    near = sorted(p.name for p in path.parent.glob("*.j2")) if path.parent.is_dir() else []
    return f"; {path.parent} has {', '.join(near)}" if near else ""
