"""The review page's web app (Starlette): HTML rendered on the server, paged and filtered on the server.

Routes take numbers, never paths: a member of the sweep, a round, a sample's row in its pool's index.
Nothing reads a file named by a request, so no request reaches a file outside the run. Every value
from the run is put into Jinja templates with autoescape on (model output is untrusted), and the
Content-Security-Policy allows no script at all. The only write is a label (rest_loop.review.labels).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import numpy as np
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from rest_loop import summary
from rest_loop.config import FilterConfig
from rest_loop.review import labels
from rest_loop.review.pool import PAGE, STATUSES
from rest_loop.review.run import RunView, drawn

TEMPLATES = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                        autoescape=select_autoescape(default=True, default_for_string=True))
TEMPLATES.filters["pretty"] = lambda x: json.dumps(x, indent=1, ensure_ascii=False, default=str)
TEMPLATES.filters["num"] = lambda x, spec=".3f": "-" if not isinstance(x, (int, float)) or math.isnan(x) \
    else format(x, spec)
TEMPLATES.filters["short"] = lambda s, n=300: s if len(s or "") <= n else s[:n] + " …"
HEADERS = {"Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; "
                                      "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
           "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
KEPT = ("", "kept", "dropped")
STAGES = ("", *FilterConfig.STAGES, "not paired")


class Site:
    """What the page was given: one run, or a sweep of them (members in rest-loop-report's order)."""

    def __init__(self, path: Path):
        self.path = path
        self.sweep = not summary.is_run(path)
        self.members = summary.members(path)
        self.runs = [RunView(m) for m in self.members]
        self._figures: dict[str, bytes] | None = None

    def run(self, m: int) -> RunView:
        if not 0 <= m < len(self.runs):
            raise HTTPException(404, f"no member {m}")
        return self.runs[m]

    def figures(self) -> dict[str, bytes]:
        """The sweep's figures: all members in one (a run's are RunView.figures)."""
        if self._figures is None:
            self._figures = drawn(self.members)
        return self._figures


def page(name: str, status: int = 200, **context) -> HTMLResponse:
    return HTMLResponse(TEMPLATES.get_template(name).render(**context), status_code=status, headers=HEADERS)


def choice(request: Request, key: str, allowed: tuple) -> str:
    value = request.query_params.get(key, "")
    if value not in allowed:
        raise HTTPException(400, f"{key}={value!r}: must be one of {', '.join(repr(a) for a in allowed)}")
    return value


def number(request: Request, key: str, cast=float, default=None, low=None):
    raw = request.query_params.get(key, "").strip()
    if not raw:
        return default
    try:
        value = cast(raw)
    except ValueError:
        raise HTTPException(400, f"{key}={raw!r}: must be a number") from None
    if (low is not None and value < low) or (isinstance(value, float) and math.isnan(value)):
        raise HTTPException(400, f"{key}={raw!r}: out of range")
    return value


def home(request: Request) -> Response:
    site: Site = request.app.state.site
    if not site.sweep:
        return run_page(request, 0)
    cells = [summary.member_cells(m) for m in site.members]
    return page("sweep.html", site=site, cells=cells, cache=summary.cache_line(site.members),
                figures=summary.FIGURES)


def run_page(request: Request, m: int | None = None) -> Response:
    site: Site = request.app.state.site
    m = request.path_params["m"] if m is None else m
    run = site.run(m)
    header, cells = summary.run_table(run.member) if run.member.manifest else ([], [])
    rounds = [(r, run.stats(r)) for r in run.rounds]
    return page("run.html", site=site, m=m, run=run, header=header, cells=cells, rounds=rounds,
                figures=summary.FIGURES, why=summary.why(run.member), labelled=len(run.labels()))


def figure(request: Request) -> Response:
    site: Site = request.app.state.site
    name = request.path_params["name"]
    drawn = site.figures() if "m" not in request.path_params else site.run(request.path_params["m"]).figures()
    if name not in drawn:
        raise HTTPException(404, f"no figure {name!r}")
    return Response(drawn[name], media_type="image/png", headers=HEADERS)


def pool_of(request: Request):
    site: Site = request.app.state.site
    m, r = request.path_params["m"], request.path_params["r"]
    run = site.run(m)
    if r not in run.rounds:
        raise HTTPException(404, f"no round {r} with a pool")
    return site, m, run, r, run.pool(r)


def pool_page(request: Request) -> Response:
    site, m, run, r, pool = pool_of(request)
    f = {"status": choice(request, "status", ("", *STATUSES)), "kept": choice(request, "kept", KEPT),
         "stage": choice(request, "stage", STAGES), "step": number(request, "step", int, 1, low=1),
         "min": number(request, "min"), "max": number(request, "max"),
         "prompt": request.query_params.get("prompt", "").strip(), "text": request.query_params.get("text", "").strip()}
    prompts = None
    if f["prompt"]:
        q = f["prompt"].casefold()
        prompts = np.array([q in pid.casefold() or q in run.prompt_text(pid).casefold() for pid in pool.prompt_ids],
                           bool)
    mask = pool.mask(f["status"], f["kept"], f["step"], f["stage"], f["min"], f["max"], prompts, f["text"])
    found = np.flatnonzero(mask)
    pages = max(1, math.ceil(len(found) / PAGE))
    n = min(number(request, "page", int, 0, low=0), pages - 1)
    rows = pool.rows(found[n * PAGE:(n + 1) * PAGE])
    query = {k: v for k, v in f.items() if v not in ("", None) and not (k == "step" and v == 1)}
    link = lambda p: "?" + urlencode({**query, "page": p})  # noqa: E731
    return page("pool.html", site=site, m=m, run=run, r=r, pool=pool, rows=rows, f=f, found=len(found), n=n,
                pages=pages, link=link, statuses=STATUSES, kept_choices=KEPT, stages=STAGES,
                labelled=labels.latest(run.labels()), stats=run.stats(r))


def sample_page(request: Request) -> Response:
    site, m, run, r, pool = pool_of(request)
    i = request.path_params["i"]
    if not 0 <= i < len(pool):
        raise HTTPException(404, f"no sample {i} in round {r}")
    row = pool.rows(np.array([i]))[0]
    s = row["sample"]
    key = (r, s["prompt_id"], s["sample_idx"])
    history = [x for x in run.labels() if (x["round"], x["prompt_id"], x["sample_idx"]) == key]
    prompt = run.prompts[0].get(s["prompt_id"])
    return page("sample.html", site=site, m=m, run=run, r=r, row=row, s=s, prompt=prompt,
                p=int(pool.prompt[i]), history=history, stale=bool(history) and history[-1]["sha256"]
                != labels.digest(labels.text_of(s)), back=request.headers.get("referer", ""))


async def label(request: Request) -> Response:
    site, m, run, r, pool = pool_of(request)
    i = request.path_params["i"]
    if not 0 <= i < len(pool):
        raise HTTPException(404, f"no sample {i} in round {r}")
    same_origin(request)
    form = await request.form()
    verdict, note = str(form.get("label", "")), str(form.get("note", ""))
    if verdict not in labels.LABELS:
        raise HTTPException(400, f"label={verdict!r}: must be good or bad")
    s = pool.rows(np.array([i]))[0]["sample"]
    labels.append(run.dir, r, s["prompt_id"], s["sample_idx"], verdict, note, labels.text_of(s))
    return RedirectResponse(f"/m/{m}/r/{r}/s/{i}", status_code=303)


def same_origin(request: Request) -> None:
    """A form posted from another site (a page the browser has open elsewhere) may not add labels."""
    origin = request.headers.get("origin")
    if request.headers.get("sec-fetch-site") == "cross-site" or \
            (origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host")):
        raise HTTPException(403, "labels are taken only from the review page itself")


def prompt_page(request: Request) -> Response:
    site, m, run, r, pool = pool_of(request)
    p = request.path_params["p"]
    if not 0 <= p < len(pool.prompt_ids):
        raise HTTPException(404, f"no prompt {p} in round {r}")
    rows = pool.rows(pool.of_prompt(p))
    groups = {}  # a ranking judge's groups: its shown order, ranking and whether the first shown won
    for row in rows:
        for term, part in ((row["judgement"] or {}).get("parts") or {}).items():
            raw = part.get("raw") or {}
            if isinstance(raw, dict) and "shown" in raw:
                groups[(term, str(raw.get("shuffle_seed")))] = raw
    pid = pool.prompt_ids[p]
    return page("prompt.html", site=site, m=m, run=run, r=r, pool=pool, rows=rows, pid=pid,
                prompt=run.prompts[0].get(pid), groups=groups, labelled=labels.latest(run.labels()))


def heldout_page(request: Request) -> Response:
    site: Site = request.app.state.site
    m = request.path_params["m"]
    run = site.run(m)
    names, table = run.heldout()
    metrics = dict(run.evals())
    q = request.query_params.get("prompt", "").strip().casefold()
    pids = [pid for pid in table if not q or q in pid.casefold() or q in run.prompt_text(pid).casefold()]
    per = 20
    pages = max(1, math.ceil(len(pids) / per))
    n = min(number(request, "page", int, 0, low=0), pages - 1)
    return page("heldout.html", site=site, m=m, run=run, names=names, metrics=metrics, table=table,
                pids=pids[n * per:(n + 1) * per], n=n, pages=pages, q=request.query_params.get("prompt", ""),
                total=len(pids))


def labels_page(request: Request) -> Response:
    site: Site = request.app.state.site
    m = request.path_params["m"]
    run = site.run(m)
    return page("labels.html", site=site, m=m, run=run, rows=run.labels(), file=run.dir / labels.FILE)


def error(request: Request, exc: HTTPException) -> Response:
    return page("error.html", status=exc.status_code, site=request.app.state.site, code=exc.status_code,
                detail=exc.detail)


def app(path: Path, hosts: list[str]) -> Starlette:
    """The app for a run or sweep folder; `hosts` are the Host names it answers (DNS rebinding stops there)."""
    routes = [
        Route("/", home),
        Route("/fig/{name:str}", figure),
        Route("/m/{m:int}/", run_page),
        Route("/m/{m:int}/fig/{name:str}", figure),
        Route("/m/{m:int}/heldout", heldout_page),
        Route("/m/{m:int}/labels", labels_page),
        Route("/m/{m:int}/r/{r:int}/", pool_page),
        Route("/m/{m:int}/r/{r:int}/p/{p:int}", prompt_page),
        Route("/m/{m:int}/r/{r:int}/s/{i:int}", sample_page),
        Route("/m/{m:int}/r/{r:int}/s/{i:int}/label", label, methods=["POST"]),
    ]
    web = Starlette(routes=routes, exception_handlers={HTTPException: error},
                    middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=hosts)])
    web.state.site = Site(path)
    return web
