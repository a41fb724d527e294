"""The web console: the store seen by an operator (`--console-listen HOST:PORT`).

Served by aiohttp on the store's own event loop, through the store's own reader, live tail and
consumer groups (no second copy of them). Pages are rendered here from small functions; every
value taken from the store goes through `html.escape` (an event whose data is `<script>` shows
as text). Nothing is loaded from elsewhere: the style and the few lines of script are inline.

Security: with tokens configured the console asks for one and acts with that principal's rights
(the token sits in an HttpOnly, SameSite=Strict cookie); pages a principal may not see answer
403, and a button it may not use is not shown and refused if posted anyway. Every state-changing
request carries a CSRF token that must equal a cookie of the same session (double submit),
which another site can neither read nor set.
"""

from __future__ import annotations

import contextlib
import hmac
import html
import json
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from contracts.eventstore.v1 import eventstore_pb2 as pb
from eventstore_server import metrics
from eventstore_server.access import ALL_STREAMS, Access
from eventstore_server.errors import StoreError
from eventstore_server.group_store import GroupSettings
from eventstore_server.groups import GroupManager
from eventstore_server.reader import Reader
from eventstore_server.subscriptions import Target, subscribe
from eventstore_server.tail import LiveTail, ShuttingDown
from eventstore_server.validation import category_of
from hosting.security import ServerTLS

TOKEN_COOKIE, CSRF_COOKIE = "es_console_token", "es_console_csrf"
PAGE_EVENTS = 50
PAGE_STREAMS = 100
LIVE_ROWS = 200  # the live page keeps this many rows, never the whole history

# Shipped in the package: no CDN, nothing fetched from elsewhere.
_ASSETS = resources.files("eventstore_server") / "console_assets"
STYLE = (_ASSETS / "console.css").read_text()
LIVE_SCRIPT = (_ASSETS / "live.js").read_text()


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _data(event: pb.RecordedEvent) -> str:
    """The event's data, pretty-printed when it is JSON."""
    try:
        return json.dumps(json.loads(event.data), indent=2, ensure_ascii=False)
    except ValueError:
        return event.data.decode("utf-8", "replace")


def _when(event: pb.RecordedEvent) -> str:
    return event.recorded_at.ToDatetime(tzinfo=UTC).isoformat(timespec="milliseconds")


class Console:
    def __init__(
        self,
        reader: Reader,
        tail: LiveTail,
        access: Access,
        groups: GroupManager | None = None,
        trace_link: str = "",
        health_interval: float = 2.0,
    ) -> None:
        """`trace_link`: a URL template for a trace id (`{trace_id}`), e.g. Jaeger's.
        `health_interval`: how often replicas report (three missed reports: down)."""
        self._health_interval = health_interval
        self._samples: list[tuple[float, int, float]] = []  # (time, head, events read here)
        self._reader = reader
        self._tail = tail
        self._access = access
        self._groups = groups
        self._trace_link = trace_link

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors])
        app.add_routes(
            [
                web.get("/", self.overview),
                web.get("/login", self.login_form),
                web.post("/login", self.login),
                web.post("/logout", self.logout),
                web.get("/streams", self.streams),
                web.get(r"/streams/{name:.+}", self.stream),
                web.get("/live", self.live),
                web.get("/live/events", self.live_events),
                web.get("/groups", self.groups),
                web.get(r"/groups/{name}", self.group),
                web.post(r"/groups/{name}/replay", self.replay),
            ]
        )
        return app

    # Sessions ---------------------------------------------------------------------------------

    def _principal(self, request: web.Request) -> str:
        try:
            return self._access.principal_of_token(request.cookies.get(TOKEN_COOKIE))
        except StoreError:
            raise web.HTTPSeeOther("/login") from None

    def _check(self, principal: str, operation: str, name: str) -> None:
        if not self._access.allows(principal, operation, name):
            what = "all streams" if name == ALL_STREAMS else name
            raise web.HTTPForbidden(text=f"{principal} may not {operation} {what}")

    @staticmethod
    def _csrf(request: web.Request) -> str:
        """This session's CSRF token (made with its first page, kept in a cookie)."""
        token: str = request.get("csrf", "")
        return token

    async def _checked_form(self, request: web.Request) -> Any:
        form = await request.post()
        sent, expected = str(form.get("csrf", "")), request.cookies.get(CSRF_COOKIE, "")
        if not expected or not hmac.compare_digest(sent, expected):
            raise web.HTTPForbidden(text="the form's CSRF token does not match this session")
        return form

    @web.middleware
    async def _errors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        request["csrf"] = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)
        try:
            response = await handler(request)
        except StoreError as error:
            response = self._page(request, "Error", f'<p class="error">{esc(error.message)}</p>')
            response.set_status(404 if error.code.name == "NOT_FOUND" else 400)
        if CSRF_COOKIE not in request.cookies and not response.prepared:
            response.set_cookie(CSRF_COOKIE, request["csrf"], **_cookie(request))
        return response

    def _page(self, request: web.Request, title: str, body: str) -> web.Response:
        signed_in = ""
        if self._access.enabled:
            signed_in = (
                f'<form method="post" action="/logout" style="margin-left:auto">'
                f'<input type="hidden" name="csrf" value="{esc(self._csrf(request))}">'
                f"<button>Sign out</button></form>"
            )
        page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>{esc(title)} · eventstore</title><style>{STYLE}</style></head>
<body><header><strong>eventstore</strong>
<a href="/">Overview</a><a href="/streams">Streams</a><a href="/live">Live</a>
<a href="/groups">Groups</a>{signed_in}</header><main><h1>{esc(title)}</h1>{body}</main>
</body></html>"""
        return web.Response(text=page, content_type="text/html")

    async def login_form(self, request: web.Request) -> web.Response:
        csrf = esc(self._csrf(request))
        body = f"""<form method="post" action="/login"><label>Token
<input type="password" name="token" autofocus required></label>
<input type="hidden" name="csrf" value="{csrf}"><button>Sign in</button></form>"""
        return self._page(request, "Sign in", body)

    async def login(self, request: web.Request) -> web.Response:
        form = await self._checked_form(request)
        token = str(form.get("token", ""))
        try:
            self._access.principal_of_token(token)
        except StoreError:
            response = await self.login_form(request)
            response.set_status(401)
            return response
        response = web.HTTPSeeOther("/")
        response.set_cookie(TOKEN_COOKIE, token, **_cookie(request))
        raise response

    async def logout(self, request: web.Request) -> web.Response:
        await self._checked_form(request)
        response = web.HTTPSeeOther("/login")
        response.del_cookie(TOKEN_COOKIE)
        raise response

    # Pages ------------------------------------------------------------------------------------

    async def overview(self, request: web.Request) -> web.Response:
        principal = self._principal(request)
        self._check(principal, "stats", ALL_STREAMS)
        stats = await self._reader.stats()
        appends, reads = self._rates(stats.head_position)
        cards = [
            ("head position", f"{stats.head_position:,}"),
            ("events", f"{stats.head_position - stats.events_scavenged:,}"),
            ("streams", f"{stats.streams:,}"),
            ("events scavenged", f"{stats.events_scavenged:,}"),
            ("appended/s, all replicas", appends),
            ("read/s, this replica", reads),
        ]
        body = "".join(f'<div class="card">{esc(k)}<b>{esc(v)}</b></div>' for k, v in cards)
        down_after = 3 * self._health_interval
        body += "<h2>Store replicas</h2>" + _table(
            ["replica", "serves", "started", "health"],
            [
                [
                    esc(r["replica"][:12]),
                    esc(r["address"]),
                    esc(r["started_at"].isoformat(timespec="seconds")),
                    "up" if r["silent_s"] < down_after else f"silent for {r['silent_s']:.0f} s",
                ]
                for r in await self._reader.replicas()
            ],
            "No replica has reported yet.",
        )
        body += "<h2>Durable subscribers</h2>" + _table(
            ["subscriber", "position", "lag", "updated"],
            [
                [esc(s.name), _n(s.position), _n(s.lag), esc(s.updated_at.ToJsonString())]
                for s in stats.subscribers
            ],
            "No durable subscribers.",
        )
        return self._page(request, "Overview", body)

    def _rates(self, head: int) -> tuple[str, str]:
        """Events appended (the head's move) and read here per second, since the oldest of
        the samples kept from the last minute of overview requests ("-" with only one)."""
        now = time.monotonic()
        read = sum(
            sample.value
            for family in metrics.READ_EVENTS.collect()
            for sample in family.samples
            if sample.name.endswith("_total")
        )
        self._samples = [s for s in self._samples if now - s[0] < 60] + [(now, head, read)]
        first = self._samples[0]
        if now - first[0] < 1:
            return "-", "-"
        elapsed = now - first[0]
        return f"{(head - first[1]) / elapsed:,.1f}", f"{(read - first[2]) / elapsed:,.1f}"

    async def streams(self, request: web.Request) -> web.Response:
        principal = self._principal(request)
        prefix = request.query.get("prefix", "")
        after = request.query.get("after", "")
        rows = await self._reader.streams(prefix, after, PAGE_STREAMS)
        shown = [r for r in rows if self._access.allows(principal, "read", r["category"])]
        body = f"""<form method="get" action="/streams"><label>Name starts with
<input name="prefix" value="{esc(prefix)}"></label> <button>Search</button></form><p></p>"""
        body += _table(
            ["stream", "category", "version", ""],
            [
                [
                    f'<a href="/streams/{quote(r["name"], safe="")}">{esc(r["name"])}</a>',
                    esc(r["category"]),
                    _n(r["version"]),
                    "tombstoned" if r["tombstoned"] else ("deleted" if r["deleted"] else ""),
                ]
                for r in shown
            ],
            "No streams.",
        )
        if len(rows) == PAGE_STREAMS:
            more = urlencode({"prefix": prefix, "after": rows[-1]["name"]})
            body += f'<p><a href="/streams?{esc(more)}">More streams</a></p>'
        return self._page(request, "Streams", body)

    async def stream(self, request: web.Request) -> web.Response:
        principal = self._principal(request)
        name = request.match_info["name"]
        self._check(principal, "read", category_of(name))
        before = _number(request.query.get("before", "0"))
        version = _number(request.query.get("version", "0"))  # as of a version: it and earlier
        before = version + 1 if version else before
        as_of_text = request.query.get("as_of", "").strip()
        as_of = _moment(as_of_text)
        start = max(before - 1, 0) if before else 0
        if before == 1:
            events: list[pb.RecordedEvent] = []
        else:
            pages = self._reader.read_stream(name, start, PAGE_EVENTS, True, as_of)
            events = [e async for page in pages for e in _decoded(page.records)]
        rows = [
            [
                _n(e.position),
                _n(e.version),
                esc(e.type),
                esc(_when(e)),
                self._metadata(dict(e.metadata)),
                f"<pre>{esc(_data(e))}</pre>",
            ]
            for e in events
        ]
        here = f"/streams/{quote(name, safe='')}"
        body = f"""<form method="get" action="{esc(here)}"><label>As of version
<input name="version" inputmode="numeric" size="8"></label> <label>or time (ISO 8601, UTC)
<input name="as_of" value="{esc(as_of_text)}" placeholder="2026-11-30T23:59:59"></label>
<button>Show</button></form>"""
        if as_of_text and as_of is None:
            body += f'<p class="error">{esc(as_of_text)} is not an ISO 8601 time</p>'
        body += _table(
            ["position", "version", "type", "recorded", "metadata", "data"], rows, "No events."
        )
        if events and events[-1].version > 1:
            query = urlencode({"before": events[-1].version, "as_of": as_of_text})
            body += f'<p><a href="{esc(here)}?{esc(query)}">Older events</a></p>'
        return self._page(request, name, body)

    def _metadata(self, metadata: dict[str, str]) -> str:
        parts = []
        for key, value in sorted(metadata.items()):
            shown = esc(value)
            trace = value.split("-")[1] if key == "traceparent" and value.count("-") == 3 else ""
            if trace and self._trace_link:
                link = self._trace_link.replace("{trace_id}", trace)
                shown = f'<a href="{esc(link)}" rel="noreferrer">{esc(value)}</a>'
            parts.append(f'<span class="muted">{esc(key)}</span> {shown}')
        return "<br>".join(parts)

    async def live(self, request: web.Request) -> web.Response:
        principal = self._principal(request)
        category = request.query.get("category", "")
        kind = request.query.get("type", "")
        self._check(principal, "subscribe", category or ALL_STREAMS)
        feed = "/live/events?" + urlencode({"category": category, "type": kind})
        body = f"""<form method="get" action="/live"><label>Category
<input name="category" value="{esc(category)}"></label> <label>Type
<input name="type" value="{esc(kind)}"></label> <button>Follow</button></form>
<p><button id="pause" type="button">Pause</button>
<span id="state" class="muted">connecting</span>
<span class="muted"> (new events appear as they commit; the latest {LIVE_ROWS} stay)</span></p>
<table><thead><tr><th>position</th><th>recorded</th><th>stream</th><th>type</th><th>data</th>
</tr></thead><tbody id="rows"></tbody></table>
<script data-feed="{esc(feed)}" data-rows="{LIVE_ROWS}">
document.body.dataset.feed = document.currentScript.dataset.feed;
document.body.dataset.rows = document.currentScript.dataset.rows;
{LIVE_SCRIPT}</script>"""
        return self._page(request, "Live", body)

    async def live_events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: each new event as JSON, from the head on."""
        principal = self._principal(request)
        category = request.query.get("category", "")
        kind = request.query.get("type", "")
        self._check(principal, "subscribe", category or ALL_STREAMS)
        target = Target(category=category, types=frozenset([kind] if kind else []))
        # The head before the headers go out: what commits once the page sees the feed open
        # is after it, and shown.
        head = await self._reader.head()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        response.headers["Cache-Control"] = "no-store"
        await response.prepare(request)
        responses = subscribe(self._reader, self._tail, target, head, PAGE_EVENTS)
        # Ends when the store stops or the page goes away.
        with contextlib.suppress(ShuttingDown, ConnectionResetError):
            async with contextlib.aclosing(responses):  # type: ignore[type-var]
                await self._stream_events(response, responses)
        return response

    async def _stream_events(
        self, response: web.StreamResponse, responses: AsyncIterator[bytes]
    ) -> None:
        async for encoded in responses:
            if not isinstance(encoded, bytes):
                continue  # the caught-up marker: nothing to show
            for event in _decoded(encoded):
                item = {
                    "position": event.position,
                    "stream": event.stream,
                    "version": event.version,
                    "type": event.type,
                    "recorded_at": _when(event),
                    "data": _data(event)[:2000],
                }
                await response.write(f"data: {json.dumps(item)}\n\n".encode())

    async def groups(self, request: web.Request) -> web.Response:
        principal = self._principal(request)
        self._check(principal, "stats", ALL_STREAMS)
        infos = await self._group_manager().store.infos()
        body = _table(
            ["group", "category", "checkpoint", "lag", "members", "in flight", "parked"],
            [
                [
                    f'<a href="/groups/{quote(g.group, safe="")}">{esc(g.group)}</a>',
                    esc(g.category or "(all)"),
                    _n(g.checkpoint),
                    _n(g.lag),
                    _n(g.members),
                    _n(g.in_flight),
                    _n(g.parked),
                ]
                for g in infos
            ],
            "No consumer groups.",
        )
        return self._page(request, "Consumer groups", body)

    async def group(self, request: web.Request) -> web.Response:
        principal = self._principal(request)
        manager, settings = await self._group(request)
        self._check(principal, "read", settings.category or ALL_STREAMS)
        parked = await manager.store.parked(settings.name, 0, 500)
        rows = []
        for r in parked:
            [event] = pb.ReadAllResponse.FromString(r["record"]).events
            rows.append(
                [
                    _n(r["position"]),
                    f'<a href="/streams/{quote(event.stream, safe="")}">'
                    f"{esc(event.stream)}@{event.version}</a>",
                    esc(event.type),
                    esc(r["reason"]),
                    _n(r["attempts"]),
                ]
            )
        body = ""
        if parked and self._access.allows(principal, "admin", settings.name):
            body += f"""<form method="post" action="/groups/{quote(settings.name, safe="")}/replay">
<input type="hidden" name="csrf" value="{esc(self._csrf(request))}">
<button id="replay">Replay {len(parked)} parked event(s)</button></form><p></p>"""
        body += _table(
            ["position", "event", "type", "reason", "attempts"], rows, "Nothing is parked."
        )
        return self._page(request, f"Group {settings.name}", body)

    async def replay(self, request: web.Request) -> web.Response:
        principal = self._principal(request)
        await self._checked_form(request)
        manager, settings = await self._group(request)
        self._check(principal, "admin", settings.name)
        await manager.replay_parked(settings)
        raise web.HTTPSeeOther(f"/groups/{quote(settings.name, safe='')}")

    async def _group(self, request: web.Request) -> tuple[GroupManager, GroupSettings]:
        """The groups, and the settings of the group the path names (404 when none)."""
        manager = self._group_manager()
        settings = await manager.store.get(request.match_info["name"])
        if settings is None:
            raise web.HTTPNotFound(text="no such group")
        return manager, settings

    def _group_manager(self) -> GroupManager:
        if self._groups is None:
            raise web.HTTPNotFound(text="consumer groups are not enabled on this server")
        return self._groups


def _decoded(records: bytes) -> Iterable[pb.RecordedEvent]:
    return pb.ReadAllResponse.FromString(records).events


def _cookie(request: web.Request) -> dict[str, Any]:
    """Cookies scripts cannot read, other sites cannot send, and HTTPS keeps to itself."""
    return {"httponly": True, "samesite": "Strict", "secure": request.secure}


def _moment(text: str) -> datetime | None:
    """An ISO 8601 time (without a zone: UTC); None for none or for one that is not."""
    try:
        moment = datetime.fromisoformat(text) if text else None
    except ValueError:
        return None
    if moment is not None and moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


def _n(value: int) -> str:
    return f'<span class="n">{value:,}</span>'


def _number(text: str) -> int:
    return int(text) if text.isdigit() and len(text) < 19 else 0


def _table(headings: list[str], rows: list[list[str]], empty: str) -> str:
    if not rows:
        return f'<p class="muted">{esc(empty)}</p>'
    head = "".join(f"<th>{esc(h)}</th>" for h in headings)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


async def serve(console: Console, listen: str, tls: ServerTLS | None = None) -> web.AppRunner:
    """Start the console on `listen` (HOST:PORT), over HTTPS with the store's certificate when
    it has one (tokens then never cross the network in the clear); the runner, to clean up."""
    host, port = listen.rsplit(":", 1)
    runner = web.AppRunner(console.app(), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    context = None
    if tls is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tls.cert_file, tls.key_file)
    site = web.TCPSite(runner, host.strip("[]"), int(port), ssl_context=context)
    await site.start()
    return runner
