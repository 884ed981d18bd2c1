"""The dataset viewer: a local, read-only web page over the Parquet shards.

Server-rendered Jinja2 pages and no JavaScript: everything shown is a link or a
``<details>`` element, so the page works the same in any browser and there is no
client code to trust with model output. All data is escaped by Jinja's autoescape
(Wikipedia text and model output are untrusted); the Content-Security-Policy header
forbids scripts outright as a second line of defence, and the Host check refuses
DNS-rebinding requests that would let a web page read the data through the browser.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import jinja2
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.templating import Jinja2Templates
from starlette.middleware.trustedhost import TrustedHostMiddleware

from hopforge.errors import HopforgeError, StorageError
from hopforge.storage.catalog import Selection
from hopforge.viewer import queries
from hopforge.viewer.live_catalog import LiveCatalog

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
TEMPLATES = Path(__file__).parent / "templates"
# Where a data card may sit under OUT when --card is not given (`hopforge export --dest` writes
# dest/README.md and dest/plots/*.png; exporting into OUT/export or OUT/card is common).
CARD_GLOBS = ("card/*", "card/plots/*", "export/*", "export/plots/*", "export/*/*", "export/*/plots/*")
CARD_SUFFIXES = {".png", ".svg", ".md", ".json"}
PLOT_SUFFIXES = {".png", ".svg"}


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,  # every page: data is untrusted; templates never use |safe on data
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["q"] = lambda s: quote(str(s), safe="")
    env.filters["num"] = _num
    env.filters["short"] = lambda s, n=160: "" if s is None else (s if len(s) <= n else s[: n - 1] + "…")
    return env


def _num(v: Any, digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def card_files(out: Path, card: Path | None = None) -> list[Path]:
    """Data-card files (plots, README, manifest): under ``card`` if given, else under ``out``'s usual places.

    Degrades to an empty list when no card was exported.
    """
    patterns = ("*", "plots/*") if card is not None else CARD_GLOBS
    root = card if card is not None else out
    found: dict[Path, None] = {}
    for pattern in patterns:
        for p in sorted(root.glob(pattern)):
            if p.is_file() and p.suffix.lower() in CARD_SUFFIXES:
                found[p.resolve()] = None
    return list(found)


def _opt_int(v: str | None, name: str) -> int | None:
    if v is None or v.strip() == "":
        return None
    try:
        return int(v)
    except ValueError:
        raise HTTPException(400, f"{name} must be an integer, got {v!r}") from None


def _opt_float(v: str | None, name: str) -> float | None:
    if v is None or v.strip() == "":
        return None
    try:
        return float(v)
    except ValueError:
        raise HTTPException(400, f"{name} must be a number, got {v!r}") from None


def _page_url(filters: dict[str, Any], page: int) -> str:
    return "/questions?" + urlencode({**filters, "page": page} if page > 1 else filters)


def create_app(out: str | Path, card: str | Path | None = None,
               selection: Callable[[], Selection | None] | None = None) -> FastAPI:
    """The viewer app over the data directory ``out`` (opened lazily, reopened when shards change).

    ``card`` is an export directory whose data card (README.md, plots/*.png) the overview shows;
    without it the usual places under ``out`` are searched. ``selection`` names the chain of
    stage runs the views read (default: the most recently completed one).
    """
    catalog = LiveCatalog(out, selection)
    card_dir = Path(card).resolve() if card is not None else None
    templates = Jinja2Templates(env=_environment())

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        catalog.close()

    app = FastAPI(title="hopforge viewer", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.catalog = catalog
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=[HOST, "localhost"])

    @app.middleware("http")
    async def _security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self'; form-action 'self'")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    @app.exception_handler(HopforgeError)
    async def _hopforge_error(request: Request, exc: HopforgeError):
        return templates.TemplateResponse(request, "error.html", {"message": str(exc), "title": "error"},
                                          status_code=400)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException):
        return templates.TemplateResponse(request, "error.html", {"message": str(exc.detail), "title": "error"},
                                          status_code=exc.status_code)

    def _reasons(con) -> list[str]:
        key = f"reasons:{catalog.generation}"  # whole-table scan: once per catalog generation
        if key not in catalog.cache:
            catalog.cache[key] = queries.reject_reasons(con)
        return catalog.cache[key]

    def page(request: Request, name: str, status_code: int = 200, **ctx: Any) -> HTMLResponse:
        return templates.TemplateResponse(request, name, ctx, status_code=status_code)

    @app.get("/", response_class=HTMLResponse)
    def overview(request: Request):
        with catalog.cursor() as con:
            key = f"overview:{catalog.generation}"
            data = catalog.cache.get(key) or catalog.cache.setdefault(key, queries.overview(con, catalog.out))
            question_reasons = _reasons(con)
        files = [{"url": f"/card/{i}/{quote(p.name)}", "name": _card_label(p),
                  "plot": p.suffix.lower() in PLOT_SUFFIXES} for i, p in enumerate(card_files(catalog.out, card_dir))]
        return page(request, "overview.html", title="overview", out=str(catalog.out), **data,
                    card=str(card_dir) if card_dir else None, question_reasons=question_reasons,
                    plots=[f for f in files if f["plot"]], docs=[f for f in files if not f["plot"]])

    def _card_label(p: Path) -> str:
        root = card_dir or catalog.out
        return p.relative_to(root).as_posix() if p.is_relative_to(root) else p.name

    @app.get("/card/{index}/{name}")
    def card_file(index: int, name: str):
        # Files are addressed by their place in the scan, never by a path from the request.
        files = card_files(catalog.out, card_dir)
        if not 0 <= index < len(files) or files[index].name != name:
            raise HTTPException(404, f"no data-card file {index}/{name}")
        path = files[index]
        media = "text/plain; charset=utf-8" if path.suffix.lower() in {".md", ".json"} else None
        return FileResponse(path, media_type=media)

    @app.get("/questions", response_class=HTMLResponse)
    def question_list(
        request: Request,
        hops: str | None = None,
        status: str = "all",
        reason: str | None = None,
        solve_min: str | None = None,
        solve_max: str | None = None,
        turns_min: str | None = None,
        turns_max: str | None = None,
        text: str | None = None,
        page_no: Annotated[str | None, Query(alias="page")] = None,
    ):
        flt = queries.QuestionFilter(
            hops=_opt_int(hops, "hops"), status=status, reason=reason or None,
            solve_min=_opt_float(solve_min, "solve_min"), solve_max=_opt_float(solve_max, "solve_max"),
            turns_min=_opt_int(turns_min, "turns_min"), turns_max=_opt_int(turns_max, "turns_max"),
            text=text or None)
        with catalog.cursor() as con:
            number = _opt_int(page_no, "page")
            result = queries.question_page(con, flt, page=1 if number is None else number)
            reasons = _reasons(con)
        base = flt.as_query()
        return page(request, "questions.html", title="questions", page=result, flt=flt, reasons=reasons,
                    statuses=queries.STATUSES,
                    next_url=_page_url(base, result.page + 1) if result.page < result.pages else None,
                    prev_url=_page_url(base, result.page - 1) if result.page > 1 else None,
                    first_url=_page_url(base, 1), last_url=_page_url(base, result.pages))

    @app.get("/q/{question_id}", response_class=HTMLResponse)
    def question(request: Request, question_id: str):
        with catalog.cursor() as con:
            q = queries.question_detail(con, question_id)
        if q is None:
            return page(request, "error.html", status_code=404, title="not found",
                        message=f"no question with id {question_id!r}")
        return page(request, "question.html", title=f"question {question_id}", q=q)

    @app.get("/t/{trajectory_id}", response_class=HTMLResponse)
    def trajectory(request: Request, trajectory_id: str):
        with catalog.cursor() as con:
            t = queries.trajectory_detail(con, trajectory_id)
        if t is None:
            return page(request, "error.html", status_code=404, title="not found",
                        message=f"no trajectory with id {trajectory_id!r}")
        return page(request, "trajectory.html", title=f"trajectory {trajectory_id}", t=t)

    @app.get("/sql", response_class=HTMLResponse)
    def sql(request: Request, q: Annotated[str, Query(max_length=20_000)] = ""):
        ctx: dict[str, Any] = {"title": "sql", "sql": q, "error": None, "columns": [], "rows": [],
                               "truncated": False, "limit": queries.SQL_ROW_LIMIT}
        if q.strip():
            try:
                with catalog.cursor() as con:
                    table = queries.run_sql(con, q)
                ctx["columns"] = table.column_names
                ctx["truncated"] = table.num_rows > queries.SQL_ROW_LIMIT
                # column by column: a result may repeat a column name (SELECT 1 AS a, 2 AS a)
                columns = [c.to_pylist() for c in table.slice(0, queries.SQL_ROW_LIMIT).columns]
                ctx["rows"] = [list(r) for r in zip(*columns, strict=True)]
            except HopforgeError as e:  # SQLGuardError: refused; StorageError: failed or timed out
                ctx["error"] = str(e)
                return page(request, "sql.html", status_code=400, **ctx)
        return page(request, "sql.html", **ctx)

    return app


def serve(out: str | Path, port: int = 8765, card: str | Path | None = None,
          selection: Callable[[], Selection | None] | None = None) -> None:
    """Serve the viewer on 127.0.0.1:``port`` until interrupted (never on another interface)."""
    import uvicorn

    if card is not None and not Path(card).is_dir():
        raise StorageError(f"--card {card}: not a directory (pass the --dest of `hopforge export`)")
    app = create_app(out, card, selection)
    with app.state.catalog.cursor():  # fail now, with the storage error, if OUT is not a data directory
        pass
    log.info("hopforge viewer on http://%s:%d/ (Ctrl-C to stop)", HOST, port)
    uvicorn.run(app, host=HOST, port=port, log_level="warning")
