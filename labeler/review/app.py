"""The review web app: Starlette routes rendering the package's jinja2 templates (autoescaped: the run's
text is data, any HTML in it shows as text).

Access: every request needs the server's random token, given once in the printed URL (`?token=`), then
carried by an HttpOnly, SameSite=Strict cookie; without it the answer is 403. The Host header must name
the address served (no DNS rebinding). A POST (a label) must also carry the page's CSRF token and come
from the same origin (`Origin`, `Sec-Fetch-Site`). Pages are sent with a strict Content-Security-Policy:
scripts and styles only from the app's own static files.
"""

from __future__ import annotations

import hmac
import math
import secrets
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from labeler.core.errors import InputError
from labeler.core.records import FLAGS
from labeler.review.index import SORTS, ListQuery, RunIndex
from labeler.review.rewards import PairRewards
from labeler.store.human import (
    CHOICES,
    NOTE_MAX_CHARS,
    HumanLabel,
    append_label,
    human_folder,
    labels_by_pair,
    new_label,
    read_human_labels,
)

HERE = Path(__file__).parent
COOKIE = "labeler_review_token"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # The address with the token is answered by a redirect to one without it; "same-origin" (not
    # "no-referrer", with which a browser sends `Origin: null`) keeps the Origin of a form sent.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def template_environment() -> jinja2.Environment:
    """The pages' jinja2 environment: templates from the package, autoescape on for every template."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


@dataclass
class HumanLabels:
    """The current human labels of the run, read again when a labels file changed."""

    run_dir: Path
    _seen: tuple[tuple[str, int, int], ...] | None = None
    _labels: dict[tuple[str, str], HumanLabel] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def current(self) -> dict[tuple[str, str], HumanLabel]:
        folder = human_folder(self.run_dir)
        files = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
        seen = tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in files)
        with self._lock:
            if seen != self._seen:
                self._labels = read_human_labels(self.run_dir)
                self._seen = seen
            return self._labels


@dataclass(frozen=True)
class ReviewState:
    run_dir: Path
    annotator: str
    token: str
    page_size: int
    allowed_hosts: frozenset[str]

    @property
    def csrf(self) -> str:
        return hmac.new(self.token.encode(), b"csrf", "sha256").hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def _float(text: str | None, default: float) -> float:
    try:
        value = float(text) if text not in (None, "") else default
    except ValueError:
        return default
    return min(1.0, max(0.0, value)) if math.isfinite(value) else default


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text else default
    except ValueError:
        return default


def list_query(params: dict[str, str], size: int) -> ListQuery:
    """The list's filters from a query string; unknown or bad values fall back to "no filter"."""
    sort = params.get("sort", "position")
    return ListQuery(
        flag=params.get("flag", "")[:100],
        principle=params.get("principle", "")[:200],
        p_min=_float(params.get("p_min"), 0.0),
        p_max=_float(params.get("p_max"), 1.0),
        text=params.get("q", "")[:500],
        sort=sort if sort in SORTS else "position",
        page=max(1, _int(params.get("page"), 1)),
        size=size,
    )


LIST_PARAMS = ("flag", "principle", "p_min", "p_max", "q", "sort", "human", "rm")


def build_app(
    run_dir: Path,
    *,
    annotator: str,
    token: str,
    page_size: int,
    allowed_hosts: set[str],
    rewards: PairRewards | None = None,
) -> Starlette:
    """The application for one run (the index is built here: the run's committed shards are read once);
    `rewards`, filled in while it serves, are a reward model's scores of the pairs."""
    state = ReviewState(Path(run_dir), annotator, token, page_size, frozenset(allowed_hosts))
    index = RunIndex(state.run_dir)
    labels = HumanLabels(state.run_dir)
    labels.current()  # an altered labels file is refused before the server starts
    templates = Jinja2Templates(env=template_environment())

    def human_sets(params: dict[str, str]) -> dict[str, set[str] | None]:
        """The ids the human-label and reward-model filters keep (`only`) or drop (`without`)."""
        keep: list[set[str]] = []
        drop: set[str] = set()
        want = params.get("human", "")
        current = labels.current()
        mine = {pair for (who, pair) in current if who == state.annotator}
        if want == "mine":
            keep.append(mine)
        elif want == "todo":
            drop |= mine
        elif want == "any":
            keep.append({pair for (_, pair) in current})
        said = params.get("rm", "")
        if rewards is not None and said in ("agree", "disagree"):
            keep.append(rewards.ids(said))
        elif rewards is not None and said == "unscored":
            drop |= set(rewards.rewards)
        only = set.intersection(*keep) if keep else None
        return {"only": only, "without": drop or None}

    def render(request: Request, name: str, context: dict[str, object], status: int = 200) -> Response:
        base = {"csrf": state.csrf, "annotator": state.annotator, "run_name": state.run_dir.name,
                "status": index.status("preferences"), "pairs": index.pairs, "sft_rows": index.sft_rows,
                "rewards": rewards}  # fmt: skip
        return templates.TemplateResponse(request, name, {**base, **context}, status_code=status)

    def kept_params(params: dict[str, str]) -> str:
        return urlencode({key: params[key] for key in LIST_PARAMS if params.get(key)})

    async def list_page(request: Request) -> Response:
        index.refresh()
        params = dict(request.query_params)
        query = list_query(params, state.page_size)
        page = index.page(query, **human_sets(params))
        by_pair = labels_by_pair(labels.current())
        kept = kept_params(params)
        return render(request, "list.html", {
            "page": page, "query": query, "params": params, "kept": kept, "sorts": SORTS,
            "flags": index.flags(), "flag_meanings": FLAGS, "principles": index.principles(),
            "by_pair": by_pair,
            "verdicts": {row.id: rewards.verdicts.get(row.id) for row in page.rows} if rewards else {},
        })  # fmt: skip

    async def pair_page(request: Request) -> Response:
        index.refresh()
        pair_id = request.path_params["pair_id"]
        record = index.pair(pair_id)
        if record is None:
            return render(request, "missing.html", {"what": "pair", "id": pair_id}, status=404)
        params = dict(request.query_params)
        query = list_query(params, state.page_size)
        human = human_sets(params)
        mine = labels.current().get((state.annotator, pair_id))
        others = labels_by_pair(labels.current()).get(pair_id, {})
        scores = [(score.principle_id, score.score) for score in record.principle_scores]
        top = max((abs(value) for _, value in scores), default=0.0) or 1.0
        return render(request, "pair.html", {
            "record": record, "mine": mine, "others": others, "choices": CHOICES, "note_max": NOTE_MAX_CHARS,
            "scores": scores, "score_scale": top, "kept": kept_params(params),
            "reward": rewards.of(pair_id) if rewards else None,
            "verdict": rewards.verdicts.get(pair_id) if rewards else None,
            "next_id": index.neighbour(pair_id, query, 1, **human),
            "prev_id": index.neighbour(pair_id, query, -1, **human),
        })  # fmt: skip

    async def label(request: Request) -> Response:
        pair_id = request.path_params["pair_id"]
        form = await request.form()
        if not hmac.compare_digest(str(form.get("csrf", "")), state.csrf):
            return PlainTextResponse("403: missing or wrong CSRF token; reload the page", status_code=403)
        if index.pair(pair_id) is None:
            return render(request, "missing.html", {"what": "pair", "id": pair_id}, status=404)
        try:
            chosen = new_label(pair_id, state.annotator, str(form.get("choice", "")), str(form.get("note", "")))
        except InputError as exc:
            return PlainTextResponse(f"400: {exc.render()}", status_code=400)
        kept = str(form.get("kept", ""))
        params = dict(parse_qsl(kept))
        query = list_query(params, state.page_size)
        # The next pair of the list as it was shown: with "not labelled by me", this pair leaves the list.
        following = index.neighbour(pair_id, query, 1, **human_sets(params))
        append_label(state.run_dir, chosen)
        target = following if following is not None and form.get("stay") != "1" else pair_id
        suffix = f"?{kept}" if kept else ""
        return RedirectResponse(f"/pair/{target}{suffix}", status_code=303)

    async def sft_list(request: Request) -> Response:
        index.refresh()
        page = max(1, _int(request.query_params.get("page"), 1))
        rows, pages = index.sft_page(page, state.page_size)
        return render(request, "sft_list.html", {"rows": rows, "page": min(page, pages), "pages": pages})

    async def sft_page(request: Request) -> Response:
        index.refresh()
        row_id = request.path_params["row_id"]
        record = index.sft_row(row_id)
        if record is None:
            return render(request, "missing.html", {"what": "SFT row", "id": row_id}, status=404)
        return render(request, "sft.html", {"record": record})

    async def problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, InputError)
        return PlainTextResponse(f"the run cannot be read: {exc.render()}", status_code=409)

    app = Starlette(
        routes=[
            Route("/", list_page),
            Route("/pair/{pair_id}", pair_page),
            Route("/pair/{pair_id}/label", label, methods=["POST"]),
            Route("/sft", sft_list),
            Route("/sft/{row_id}", sft_page),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=_guard(state))],
        exception_handlers={InputError: problem},
    )
    return app


def _guard(state: ReviewState) -> Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
    """The middleware that refuses a request without the token, from a foreign host name, or (a POST)
    from another origin; the token in an address is turned into the cookie, and the address cleaned."""

    async def dispatch(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        host = request.headers.get("host", "")
        if state.allowed_hosts and host not in state.allowed_hosts:
            return _refused(f"403: host {host!r} is not the address this server was started on")
        given = request.query_params.get("token")
        cookie = request.cookies.get(COOKIE, "")
        if given is not None:
            if not hmac.compare_digest(given, state.token):
                return _refused("403: wrong token; open the address labeler review printed")
            rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
            response: Response = RedirectResponse(request.url.path + (f"?{rest}" if rest else ""), status_code=303)
            response.set_cookie(COOKIE, state.token, httponly=True, samesite="strict", path="/")
            return _secured(response)
        if not hmac.compare_digest(cookie, state.token):
            return _refused("403: this page needs the token: open the address labeler review printed")
        if request.method not in ("GET", "HEAD"):
            origin = request.headers.get("origin")
            if origin is not None and origin != f"http://{host}":
                return _refused(f"403: a request from another origin ({origin}) is refused")
            if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
                return _refused("403: a cross-site request is refused")
        return _secured(await call_next(request))

    return dispatch


def _refused(message: str) -> Response:
    return _secured(PlainTextResponse(message, status_code=403))


def _secured(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response
