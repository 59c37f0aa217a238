"""The console's pages, server-rendered: search, lead, event, live, reports, alerts, login.

Every page reads through ``Calls`` (the servicers' own code, admitted as the visitor), so a
page shows exactly what a gRPC client with the same key would be answered, and is recorded
in the read audit the same way. A refusal becomes an HTTP status in one place (``refused``,
with ``auth.refusal``'s mapping): no key -> the login form (or 401 when a key was sent in
an ``Authorization`` header), another role's page -> 403 naming the role, an unknown lead or
event (or another account's: the same answer) -> 404.

Templates autoescape every value; the only script is a static file, so the pages hold under
``Content-Security-Policy: default-src 'self'`` (``SECURITY_HEADERS``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode

import grpc
from aiohttp import web
from jinja2 import Environment, FileSystemLoader

from leadtrail.client.wire import timestamp_to_ms
from leadtrail.server.auth import Gate
from leadtrail.server.caller import MASKED_ROLES
from leadtrail.server.keys import ApiKey, KeyStore, KeyStoreError
from leadtrail.server.privacy import mask_value
from leadtrail.server.status import ServiceError, invalid, not_found
from leadtrail.server.web import auth as http_auth
from leadtrail.v1 import alerts_pb2, event_pb2, query_pb2, stream_pb2

from . import display, live, reports, views
from .calls import Calls, ConsoleServices, Metadata
from .search import MAX_QUERY, Kind, classify
from .sessions import COOKIE, IDLE_SECONDS, Session, Sessions, csrf_ok

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Not no-referrer: under it a browser posts our own forms with "Origin: null", and the Origin
    # check of a login could no longer tell our form from another site's. same-origin sends no
    # Referer to any other site, and our own origin to us.
    "Referrer-Policy": "same-origin",
}
STATIC_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
RECENT_ALERTS = 10
LISTED_ALERTS = 200
NEIGHBOUR_PAGES = 20
"""Timeline pages (of 1,000 steps) read at most to find an event's neighbours."""
REPORT_TITLES = {
    "outcomes": "Events by type and outcome",
    "sources": "Money by source (source.* events)",
    "recipients": "Money by recipient (recipient.* events)",
}
STARTED = web.RequestKey("console_started", float)
"""When the request arrived (perf_counter), for ``Server-Timing``."""


@dataclass(frozen=True)
class Visitor:
    """Who asks: the metadata the gate admits (a Bearer key, or none), the session it came
    from, and whether the key came in an ``Authorization`` header (a program, not a browser)."""

    metadata: Metadata
    session: Session | None
    header: bool
    key: ApiKey | None
    open_mode: bool = False

    @property
    def who(self) -> str:
        if self.open_mode:
            return "open mode"
        if self.key is None:
            return ""
        return f"{self.key.key_id} · {self.key.role} · {self.key.account}"


Handler = Callable[["Console", web.Request, Visitor], Awaitable[web.StreamResponse]]


def page(handler: Handler) -> Callable[[Console, web.Request], Awaitable[web.StreamResponse]]:
    """A page handler with its visitor found, and refusals answered as pages."""

    async def wrapped(self: Console, request: web.Request) -> web.StreamResponse:
        visitor = self.visitor(request)
        try:
            return await handler(self, request, visitor)
        except ServiceError as e:
            return self.refused(request, visitor, e)

    return wrapped


def _segment(value: Any) -> str:
    """A value as one URL path segment (a lead id may hold ``/``)."""
    return quote(str(value), safe="")


def _safe_next(target: str) -> str:
    """Where to go after login: a path on this server only (never ``//elsewhere``)."""
    if not target.startswith("/") or target.startswith("//") or target.startswith("/\\"):
        return "/"
    return target


class Console:
    def __init__(self, gate: Gate, keys: KeyStore, services: ConsoleServices, *, tls: bool) -> None:
        self.calls = Calls(gate, services)
        self.keys = keys
        self.tls = tls
        self.sessions = Sessions()
        folder = resources.files(__package__)
        self.templates = Environment(
            loader=FileSystemLoader(str(folder / "templates")),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters["segment"] = _segment
        for name in self.templates.list_templates():  # compiled now, not on the first visit
            self.templates.get_template(name)
        self.static = {
            name: ((folder / "static" / name).read_bytes(), STATIC_TYPES[name[name.rindex(".") :]])
            for name in ("console.css", "console.js", "favicon.svg")
        }

    def add_routes(self, app: web.Application) -> None:
        app.middlewares.append(self._timed)
        app.on_response_prepare.append(self._headers)
        router = app.router
        router.add_get("/", self.search_page)
        router.add_post("/", self.search_posted)
        router.add_get("/leads/{lead_id}", self.lead_page)
        router.add_get("/events/{event_id}", self.event_page)
        router.add_get("/live", self.live_page)
        router.add_get("/live/stream", self.live_stream)
        router.add_get("/reports", self.reports_page)
        router.add_get("/reports.csv", self.reports_csv)
        router.add_get("/alerts", self.alerts_page)
        router.add_get("/login", self.login_page)
        router.add_post("/login", self.login_posted)
        router.add_post("/logout", self.logout_posted)
        router.add_get("/static/{name}", self.static_file)
        router.add_get("/favicon.ico", self.favicon)

    # -- every response ----------------------------------------------------------------------------

    @web.middleware
    async def _timed(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        request[STARTED] = time.perf_counter()
        return await handler(request)

    async def _headers(self, request: web.Request, response: web.StreamResponse) -> None:
        """Before the headers go: the security headers, no caching, and the server's time."""
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        static = request.path.startswith("/static/")
        response.headers.setdefault("Cache-Control", "no-cache" if static else "no-store")
        started = request.get(STARTED)
        if started is not None:
            response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.2f}"

    # -- who asks ----------------------------------------------------------------------------------

    def visitor(self, request: web.Request) -> Visitor:
        header = request.headers.get("Authorization")
        if header is not None:
            _, _, secret = header.partition(" ")
            return Visitor((("authorization", header),), None, True, self._key(secret.strip()))
        session = self.sessions.get(request.cookies.get(COOKIE))
        if session is not None:
            metadata = (("authorization", f"Bearer {session.secret}"),)
            return Visitor(metadata, session, False, self._key(session.secret))
        return Visitor((), None, False, None, open_mode=not self._keys_configured(quiet=True))

    def _key(self, secret: str) -> ApiKey | None:
        """The key shown in the page header (admission is the gate's, at every call)."""
        try:
            return self.keys.authenticate(secret) if secret else None
        except KeyStoreError:
            return None

    def refused(self, request: web.Request, visitor: Visitor, error: ServiceError) -> web.StreamResponse:
        if error.code == grpc.StatusCode.UNAUTHENTICATED and not visitor.header:
            if visitor.session is not None:  # its key was revoked: the session ends with it
                self.sessions.close(visitor.session.id)
            if request.method == "GET" and not request.path.startswith(("/live/stream", "/reports.csv")):
                target = request.path_qs
                response = web.Response(
                    status=303, headers={"Location": "/login?" + urlencode({"next": target})}
                )
                response.del_cookie(COOKIE, path="/")
                return response
        refusal = http_auth.refusal(error, request.path)
        return self.render(
            "error.html",
            visitor,
            status=refusal.status,
            headers=refusal.headers,
            title=http_auth.TITLES.get(refusal.status, "Error"),
            message=refusal.reason,
        )

    def render(
        self,
        template: str,
        visitor: Visitor,
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
        **values: Any,
    ) -> web.Response:
        text = self.templates.get_template(template).render(
            who=visitor.who, session=visitor.session, status=status, **values
        )
        return web.Response(
            text=text, status=status, content_type="text/html", charset="utf-8", headers=headers
        )

    async def _form(self, request: web.Request, visitor: Visitor) -> dict[str, str]:
        """A posted form, after the CSRF checks: a session's form must carry its token; any
        form posted by a browser must come from this origin."""
        form = {name: value for name, value in (await request.post()).items() if isinstance(value, str)}
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            raise ServiceError(grpc.StatusCode.PERMISSION_DENIED, f"Origin {origin!r} is not this console's")
        if visitor.session is not None and not csrf_ok(visitor.session, form.get("csrf")):
            raise ServiceError(grpc.StatusCode.PERMISSION_DENIED, "csrf: missing or wrong form token")
        return form

    # -- search ------------------------------------------------------------------------------------

    @page
    async def search_page(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        query = request.query.get("q", "")
        return await self._search(visitor, query)

    @page
    async def search_posted(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        form = await self._form(request, visitor)
        return await self._search(visitor, form.get("q", ""))

    async def _search(self, visitor: Visitor, text: str) -> web.StreamResponse:
        alerts = await self._alerts(visitor, RECENT_ALERTS)
        values: dict[str, Any] = {"alerts": alerts, "query": text, "searched": False}
        if not text.strip():
            return self.render("search.html", visitor, **values)
        if len(text) > MAX_QUERY:
            raise invalid("q", f"{len(text)} characters, over the limit of {MAX_QUERY}")
        query = classify(text)
        if query.kind == Kind.EVENT:
            return web.Response(status=303, headers={"Location": "/events/" + _segment(query.text)})
        leads: list[dict[str, Any]] = []
        problem = ""
        if query.personal:
            field = "email" if query.kind == Kind.EMAIL else "phone"
            try:
                found = await self.calls.find_leads(
                    visitor.metadata, query_pb2.FindLeadsRequest(field=field, value=query.text)
                )
            except ServiceError as e:
                if e.code not in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INVALID_ARGUMENT):
                    raise
                problem = f"search by {field}: {e}"
            else:
                leads = views.leads(found)
        exists = query.kind in (Kind.LEAD, Kind.PHONE) and await self._lead_exists(visitor, query.text)
        if exists and not leads and query.kind == Kind.LEAD:
            return web.Response(status=303, headers={"Location": "/leads/" + _segment(query.text)})
        if query.personal and visitor.key is not None and visitor.key.role in MASKED_ROLES:
            # A role that sees personal values masked is not shown one back, even its own: the page
            # (its source, a screenshot, the browser's cache of the form) keeps the masked form only.
            values["query"] = ""
            echoed = mask_value(query.kind.value, query.text)
        else:
            values["query"] = echoed = query.text
        values.update(
            echoed=echoed,
            lead_id=query.text,
            searched=True,
            kind=query.kind.value,
            leads=leads,
            lead_exists=exists,
            problem=problem,
        )
        return self.render("search.html", visitor, **values)

    async def _lead_exists(self, visitor: Visitor, lead_id: str) -> bool:
        try:
            await self.calls.get_timeline(
                visitor.metadata, query_pb2.GetTimelineRequest(lead_id=lead_id, page_size=1)
            )
        except ServiceError as e:
            if e.code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return False
            raise
        return True

    async def _alerts(self, visitor: Visitor, limit: int) -> list[dict[str, Any]]:
        answer = await self.calls.list_alerts(visitor.metadata, alerts_pb2.ListAlertsRequest(limit=limit))
        return views.alerts(answer)

    # -- a lead ------------------------------------------------------------------------------------

    @page
    async def lead_page(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        lead_id = request.match_info["lead_id"]
        ask = query_pb2.GetTimelineRequest(
            lead_id=lead_id, json_snapshots=True, page_token=request.query.get("page", "")
        )
        as_of = _ms_param(request, "as_of")
        if as_of is not None:
            ask.as_of.FromMilliseconds(as_of)
        timeline = await self.calls.get_timeline(visitor.metadata, ask)
        shown = [
            s for s in timeline.steps if as_of is None or timestamp_to_ms(s.event.timestamp) <= as_of
        ]  # a server without as_of answers every step: the page cuts them itself
        if not shown and as_of is not None:
            raise not_found(f"lead {lead_id!r} has no step at or before {display.utc(as_of)}")
        steps = [views.step(s) for s in shown]
        last = shown[-1].event if shown else None
        if as_of is not None and shown:
            total = timestamp_to_ms(shown[-1].event.timestamp) - timestamp_to_ms(shown[0].event.timestamp)
        else:
            total = timeline.total_ms
        return self.render(
            "lead.html",
            visitor,
            lead_id=lead_id,
            steps=steps,
            total=display.duration(total),
            snapshot=views.snapshot(last.lead_json if last is not None else b""),
            next_page=timeline.next_page_token,
            as_of=display.utc(as_of) if as_of is not None else "",
            as_of_ms=as_of or "",
            audit=[
                {"id": a.id, "type": a.type, "time": display.utc_of(a.timestamp), "reason": a.reason}
                for a in timeline.audit
            ],
        )

    # -- an event ----------------------------------------------------------------------------------

    @page
    async def event_page(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        event_id = request.match_info["event_id"]
        event = await self.calls.get_event(
            visitor.metadata, query_pb2.GetEventRequest(id=event_id, json_snapshots=True)
        )
        record = views.as_exported(event)
        fields = [
            (name, display.as_text(value))
            for name, value in record.items()
            if name not in ("details", "lead")
        ]
        previous, following = await self._neighbours(visitor, event)
        return self.render(
            "event.html",
            visitor,
            event_id=event.id,
            lead_id=event.lead_id,
            fields=fields,
            outcome_class=display.outcome_class(event.outcome),
            details=sorted((k, display.as_text(v)) for k, v in record["details"].items()),
            snapshot=sorted((k, display.as_text(v)) for k, v in record["lead"].items()),
            raw=display.pretty_json(record),
            prev=previous,
            next=following,
        )

    async def _neighbours(self, visitor: Visitor, event: event_pb2.Event) -> tuple[str, str]:
        """The ids of the lead's steps before and after ``event`` ('' when none or unreadable)."""
        token, before = "", ""
        for _ in range(NEIGHBOUR_PAGES):
            try:
                timeline = await self.calls.get_timeline(
                    visitor.metadata,
                    query_pb2.GetTimelineRequest(
                        lead_id=event.lead_id, page_token=token, json_snapshots=True
                    ),
                )
            except ServiceError:
                return "", ""  # an audit record's lead, a rate limit: the page shows the event anyway
            ids = [s.event.id for s in timeline.steps]
            if event.id in ids:
                i = ids.index(event.id)
                previous = ids[i - 1] if i > 0 else before
                if i + 1 < len(ids):
                    return previous, ids[i + 1]
                if not timeline.next_page_token:
                    return previous, ""
                following = await self.calls.get_timeline(
                    visitor.metadata,
                    query_pb2.GetTimelineRequest(
                        lead_id=event.lead_id, page_token=timeline.next_page_token, page_size=1
                    ),
                )
                return previous, following.steps[0].event.id if following.steps else ""
            before = ids[-1] if ids else before
            token = timeline.next_page_token
            if not token:
                break
        return "", ""

    # -- live --------------------------------------------------------------------------------------

    @page
    async def live_page(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        self.calls.admit(visitor.metadata, "Subscribe")
        wanted = {name: request.query.get(name, "") for name in live.FILTERS}
        self.calls.check_filter(live.live_filter(wanted))  # answered here, before the page opens its stream
        chosen = {name: value for name, value in wanted.items() if value}
        return self.render(
            "live.html",
            visitor,
            outcomes=live.OUTCOMES,
            stream="/live/stream" + ("?" + urlencode(chosen) if chosen else ""),
            type=wanted["type"],
            outcome=wanted["outcome"],
            entity=wanted["entity"],
        )

    @page
    async def live_stream(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        wanted = {name: request.query.get(name, "") for name in live.FILTERS}
        ask = stream_pb2.SubscribeRequest(filter=live.live_filter(wanted), json_snapshots=True)
        last = request.headers.get("Last-Event-ID", "")
        if last.isdigit():  # a reconnecting browser: nothing committed meanwhile is missed
            ask.after_position = int(last)
        else:
            ask.from_end = True
        messages = self.calls.subscribe(visitor.metadata, ask)
        return await live.stream(request, messages, {})

    # -- reports -----------------------------------------------------------------------------------

    @page
    async def reports_page(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        span, since, until = _range(request)
        tables: dict[str, reports.Table] = {}
        for name, ask in reports.requests(span).items():
            answer = await self.calls.aggregate(visitor.metadata, ask)
            tables[name] = (
                reports.outcomes_table(answer) if name == "outcomes" else reports.money_table(name, answer)
            )
        chosen = {name: value for name, value in (("since", since), ("until", until)) if value}
        return self.render(
            "reports.html",
            visitor,
            tables=list(tables.values()),
            titles=REPORT_TITLES,
            charts=reports.charts(tables),
            since=since,
            until=until,
            range_query=("&" + urlencode(chosen)) if chosen else "",
        )

    @page
    async def reports_csv(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        name = request.query.get("table", "")
        if name not in reports.TABLES:
            raise invalid("table", f"{name!r} is not one of {', '.join(reports.TABLES)}")
        span, _, _ = _range(request)
        answer = await self.calls.aggregate(visitor.metadata, reports.requests(span)[name])
        table = reports.outcomes_table(answer) if name == "outcomes" else reports.money_table(name, answer)
        return web.Response(
            text=table.csv(),
            content_type="text/csv",
            charset="utf-8",
            headers={"Content-Disposition": f'attachment; filename="leadtrail-{name}.csv"'},
        )

    # -- alerts ------------------------------------------------------------------------------------

    @page
    async def alerts_page(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        return self.render("alerts.html", visitor, alerts=await self._alerts(visitor, LISTED_ALERTS))

    # -- login -------------------------------------------------------------------------------------

    @page
    async def login_page(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        return self.render(
            "login.html",
            visitor,
            open_mode=not self._keys_configured(),
            next=_safe_next(request.query.get("next", "/")),
            error="",
        )

    @page
    async def login_posted(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        form = await self._form(request, Visitor((), None, False, None))  # no session yet: origin only
        target = _safe_next(form.get("next", "/"))
        if not self._keys_configured():
            return web.Response(status=303, headers={"Location": target})
        secret = form.get("key", "").strip()
        if self._key(secret) is None:
            return self.render(
                "login.html",
                visitor,
                status=401,
                open_mode=False,
                next=target,
                error="unknown or revoked key",
            )
        if visitor.session is not None:  # a new login replaces the old session (no fixation)
            self.sessions.close(visitor.session.id)
        session = self.sessions.open(secret)
        response = web.Response(status=303, headers={"Location": target})
        response.set_cookie(
            COOKIE,
            session.id,
            path="/",
            httponly=True,
            samesite="Strict",
            secure=self.tls,
            max_age=IDLE_SECONDS,
        )
        return response

    @page
    async def logout_posted(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        await self._form(request, visitor)
        if visitor.session is not None:
            self.sessions.close(visitor.session.id)
        response = web.Response(status=303, headers={"Location": "/login"})
        response.del_cookie(COOKIE, path="/")
        return response

    def _keys_configured(self, *, quiet: bool = False) -> bool:
        """Whether the data directory holds keys; a key file that cannot be read counts as
        keys (fail closed), and is UNAVAILABLE unless ``quiet``."""
        try:
            return self.keys.configured()
        except KeyStoreError as e:
            if quiet:
                return True
            raise ServiceError(grpc.StatusCode.UNAVAILABLE, f"API keys: {e}") from None

    # -- assets ------------------------------------------------------------------------------------

    async def favicon(self, request: web.Request) -> web.StreamResponse:
        """Browsers ask for it whatever the page links to; a 404 would show as a console error."""
        body, content_type = self.static["favicon.svg"]
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def static_file(self, request: web.Request) -> web.StreamResponse:
        found = self.static.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        body, content_type = found
        return web.Response(body=body, headers={"Content-Type": content_type})


# -- page parts ------------------------------------------------------------------------------------


def _ms_param(request: web.Request, name: str) -> int | None:
    text = request.query.get(name, "")
    if not text:
        return None
    if not text.isdigit():
        raise invalid(name, f"{text!r} is not a time in UTC milliseconds")
    return int(text)


def _range(request: web.Request) -> tuple[reports.Range, str, str]:
    since, until = request.query.get("since", ""), request.query.get("until", "")
    return reports.Range(reports.moment("since", since), reports.moment("until", until)), since, until
