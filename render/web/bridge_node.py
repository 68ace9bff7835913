"""Web bridge node: the headset protocol for browsers, over HTTPS and secure WebSockets.

Serves the page (``render/web/static/``), its JavaScript libraries (three.js and iwer from
``render/web/node_modules``, installed by ``npm ci``) and the case's meshes by SHA-256
over HTTPS, and bridges the render node's session socket and scene stream to WebSockets
(docs/headset-protocol.md, "Browsers: the web bridge"). The frames are the protocol's own
binary msgpack payloads, unchanged in both directions: the bridge is a transport, the
render node still holds each session.

Subscribes (the ``subscribe`` list: the render node, and for the page's status table the
other nodes): ``scene/update``, forwarded raw without decoding; ``heartbeat/*`` and
``pose/*``, forwarded raw at most twice a second per topic (``status_sent``).
Publishes: ``heartbeat/<name>`` only. Counters:
``ws_clients`` (open now), ``ws_opened``, ``ws_closed``, ``ws_refused`` and
``ws_refused_<missing|malformed|unknown|expired|full>``, ``ws_revoked`` (closed because
their token was revoked or expired), ``ws_received``, ``ws_forwarded``, ``ws_rejected``
and ``ws_rejected_<kind>`` (``text``, ``malformed``, ``oversized``, ``version``,
``unknown_type``, ``invalid``, ``unexpected``), ``ws_overflow`` (a client closed because
it read nothing while 256 session messages waited), ``scene_received``, ``scene_sent``,
``scene_superseded`` (an update replaced by a newer one before its client's socket took
it: latest-wins), ``session_sent``, ``http_served``, ``http_not_found``, ``http_refused``,
``assets_fetched``, ``assets_served``, ``asset_fetch_failed``.

Per browser: the WebSocket at ``/ws?token=<pairing token>`` is refused (HTTP 401, before
the upgrade) without a valid token; then the bridge opens a DEALER session socket to the
render node for that browser. Each frame from the browser is decoded and checked (a
headset request type, under 1 MiB), then forwarded as is; anything else is counted and
dropped, and the connection goes on. What the render node answers (Welcome, pongs,
alerts, replies) is queued reliably (at most 256, else the client is closed); scene
updates go through a one-slot latest-wins box per client, so a browser whose socket backs
up loses old updates and never delays new ones. TCP_NODELAY on every connection.

HTTP: ``/`` the page; ``/static/<file>``; ``/volume/<file>.js`` (the CT ray-marcher the
page shares with ``ornav case view``); ``/lib/three/...`` and ``/lib/iwer/...``;
``/ca.pem`` (the local CA to install, public); ``/assets/<sha256>`` (token required, as
``Authorization: Bearer`` or ``?token=``): a GLB, or the CT brick (``application/gzip``,
the stored bytes), fetched once from the render node by hash and served with
``Cache-Control: private, max-age=31536000, immutable`` and
the hash as ETag; ``/pair.svg`` (token required): the pairing URL as a QR code, for the
monitor page to show the headset.

TLS: ``cert_file`` / ``key_file`` from the launch file (a hospital certificate), else a
local CA and server certificate under ``<keys dir>/web/`` (``render/web/tls.py``).
Tokens: ``<keys dir>/web/tokens.json`` (``render/web/tokens.py``); at start the bridge
issues one (``token_ttl_s``), logs the URL with it and prints it as a QR code on stderr,
and writes the URL to ``url_file`` (0600) when set, for the demo and tests.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import hashlib
import io
import logging
import mimetypes
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import zmq
import zmq.asyncio
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from nav.messages import (
    HEADSET_PROTOCOL_VERSION,
    MAX_ASSET_BYTES,
    MAX_PAYLOAD_BYTES,
    AlertAck,
    AssetData,
    AssetRequest,
    ClockPing,
    HeadsetTelemetry,
    Hello,
    MessageError,
    SnapshotRequest,
    Welcome,
    XrPairedPoses,
    XrRegistration,
    decode,
    encode,
)
from nav.runtime import bus
from nav.runtime.keys_dir import keys_dir
from nav.runtime.launchfile import NodeSpec
from nav.runtime.node import NodeRuntime, node_main
from nav.runtime.private_files import write_private_text
from render.web.tls import TlsError, TlsFiles, check_given_tls, ensure_local_tls, local_names
from render.web.tokens import TokenError, TokenStore, issue_token

log = logging.getLogger(__name__)

WEB_DIR: Final = Path(__file__).resolve().parent
STATIC_DIR: Final = WEB_DIR / "static"
VOLUME_DIR: Final = WEB_DIR / "volume"  # the ray-marcher the page shares with `ornav case view`
NODE_MODULES: Final = WEB_DIR / "node_modules"
LIBRARIES: Final = {  # URL prefix -> folder; nothing else under node_modules is served
    "/lib/three/build/": NODE_MODULES / "three" / "build",
    "/lib/three/examples/jsm/": NODE_MODULES / "three" / "examples" / "jsm",
    "/lib/iwer/build/": NODE_MODULES / "iwer" / "build",
}
SCENE_TOPIC: Final = b"scene/update"
STATUS_TOPICS: Final = (b"heartbeat/", b"pose/")
STATUS_PERIOD_S: Final = 0.5
FORWARDED: Final = (
    Hello,
    ClockPing,
    AssetRequest,
    SnapshotRequest,
    AlertAck,
    HeadsetTelemetry,
    XrRegistration,
    XrPairedPoses,
)
_QUEUE_LIMIT: Final = 256
_ASSET_TIMEOUT_S: Final = 5.0
_TOKEN_CHECK_S: Final = 1.0
_SERVICE_S: Final = 0.02
_ASSET_CACHE: Final = "private, max-age=31536000, immutable"
_CLOSE_TOKEN: Final = 4001  # WebSocket close code: the pairing token was revoked or expired
mimetypes.add_type("text/javascript", ".js")
mimetypes.add_type("text/javascript", ".mjs")


@dataclass(frozen=True)
class Config:
    """The web bridge's launch-file params.

    - ``render_endpoint``: the render node's session socket (its ``headset_endpoint``).
    - ``host``: the address to listen on: ``127.0.0.1`` (this machine only) or
      ``0.0.0.0`` (a headset on the OR network); ``port``: 0 = chosen by the OS.
    - ``public_host``: the name or address in the printed URL (and in the local server
      certificate); empty = this host's outward address, or ``localhost`` when ``host``
      is loopback.
    - ``cert_file`` / ``key_file``: a hospital certificate (PEM); empty = the local CA.
    - ``token_ttl_s``: the lifetime of the token issued at start.
    - ``url_file``: where to write the URL with that token (0600); empty = nowhere.
    - ``max_clients``: browsers connected at most (each holds a render-node session).
    - ``print_qr``: print the URL as a QR code on stderr at start.
    """

    render_endpoint: str
    host: str = "127.0.0.1"
    port: int = 8443
    public_host: str = ""
    cert_file: str = ""
    key_file: str = ""
    token_ttl_s: float = 12 * 3600.0
    url_file: str = ""
    max_clients: int = 8
    print_qr: bool = True

    def __post_init__(self) -> None:
        if not self.render_endpoint:
            raise ValueError("key 'render_endpoint': must name the render node's session socket")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"key 'port': {self.port} is not a TCP port")
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("keys 'cert_file' and 'key_file': give both or neither")
        if not 0 < self.token_ttl_s <= 30 * 24 * 3600:
            raise ValueError("key 'token_ttl_s': must be in (0, 30 days]")
        if self.max_clients < 1:
            raise ValueError("key 'max_clients': must be >= 1")


def web_keys_dir() -> Path:
    """``<keys dir>/web``: the local CA, the server certificate and the token store."""
    return keys_dir() / "web"


def token_file() -> Path:
    return web_keys_dir() / "tokens.json"


# --- one browser ----------------------------------------------------------------------


@dataclass(eq=False)
class _Client:
    ws: ServerConnection
    token: str
    dealer: zmq.asyncio.Socket
    reliable: collections.deque[bytes] = field(default_factory=collections.deque)
    scene: bytes | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    closing: bool = False


class Bridge:
    """The HTTP/WebSocket side and its per-client tasks; counts into ``counters``."""

    def __init__(
        self,
        cfg: Config,
        *,
        counters: bus.Counters,
        tokens: TokenStore,
        scene_endpoints: Sequence[str],
        ctx: zmq.asyncio.Context,
    ) -> None:
        self.cfg = cfg
        self.counters = counters
        self.tokens = tokens
        self.scene_endpoints = tuple(scene_endpoints)
        self.ctx = ctx
        self.clients: set[_Client] = set()
        self.assets: dict[str, bytes] = {}
        self._asset_locks: dict[str, asyncio.Lock] = {}
        self._warned: set[tuple[str, str]] = set()
        self.pair_url = ""

    # --- counting ----------------------------------------------------------------------

    def _count(self, group: str, kind: str, detail: str) -> None:
        self.counters[group] += 1
        self.counters[f"{group}_{kind}"] += 1
        if (group, kind) not in self._warned:  # once per kind: a flood cannot fill the log
            self._warned.add((group, kind))
            log.warning("%s (%s): %s; counting further ones", group, kind, detail)

    # --- HTTP --------------------------------------------------------------------------

    def _response(
        self, status: int, body: bytes, content_type: str, extra: Sequence[tuple[str, str]] = ()
    ) -> Response:
        headers = Headers(
            [
                ("Content-Type", content_type),
                ("Content-Length", str(len(body))),
                ("X-Content-Type-Options", "nosniff"),
                ("Connection", "close"),
                *extra,
            ]
        )
        reason = {200: "OK", 304: "Not Modified", 401: "Unauthorized", 404: "Not Found"}
        return Response(status, reason.get(status, "Error"), headers, body)

    def _text(self, status: int, text: str) -> Response:
        return self._response(status, (text + "\n").encode(), "text/plain; charset=utf-8")

    def _request_token(self, request: Request, query: dict[str, list[str]]) -> str:
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return auth[len("Bearer ") :].strip()
        return (query.get("token") or [""])[0]

    def _file(self, path: Path, request: Request, cache: str) -> Response:
        data = path.read_bytes()
        etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
        if request.headers.get("If-None-Match") == etag:
            return self._response(304, b"", "text/plain", [("ETag", etag)])
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        self.counters["http_served"] += 1
        return self._response(200, data, content_type, [("ETag", etag), ("Cache-Control", cache)])

    @staticmethod
    def _inside(root: Path, relative: str) -> Path | None:
        """``root/relative`` if it is a file inside ``root`` (no ``..`` escape), else None."""
        try:
            path = (root / relative).resolve()
        except (OSError, ValueError):
            return None
        if root.resolve() not in path.parents or not path.is_file():
            return None
        return path

    async def process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        url = urllib.parse.urlsplit(request.path)
        query = urllib.parse.parse_qs(url.query)
        path = url.path
        if path == "/ws":
            token = (query.get("token") or [""])[0]
            why = self.tokens.why_not(token, time.time())
            if why != "ok":
                self._count("ws_refused", why, f"WebSocket from {connection.remote_address}")
                return self._text(401, f"pairing token {why}")
            if len(self.clients) >= self.cfg.max_clients:
                self._count("ws_refused", "full", f"{len(self.clients)} browsers connected")
                return self._text(503, "too many browsers connected: try later")
            return None  # go on with the WebSocket handshake
        if path in ("/", "/index.html"):
            return self._file(STATIC_DIR / "index.html", request, "no-cache")
        if path.startswith("/static/"):
            found = self._inside(STATIC_DIR, path[len("/static/") :])
            if found is not None:
                return self._file(found, request, "no-cache")
        if path.startswith("/volume/") and path.endswith(".js"):  # its modules, not its page
            found = self._inside(VOLUME_DIR, path[len("/volume/") :])
            if found is not None:
                return self._file(found, request, "no-cache")
        for prefix, root in LIBRARIES.items():
            if path.startswith(prefix):
                found = self._inside(root, path[len(prefix) :])
                if found is not None:  # pinned by the lockfile: a day is safe
                    return self._file(found, request, "public, max-age=86400")
        if path == "/ca.pem":
            ca = web_keys_dir() / "ca.pem"
            if ca.is_file():
                return self._response(200, ca.read_bytes(), "application/x-x509-ca-cert")
        if path.startswith("/assets/") or path == "/pair.svg":
            token = self._request_token(request, query)
            why = self.tokens.why_not(token, time.time())
            if why != "ok":
                self._count("http_refused", why, f"{path[:80]} from {connection.remote_address}")
                return self._text(401, f"pairing token {why}")
            if path == "/pair.svg":
                return self._response(200, _qr_svg(self.pair_url), "image/svg+xml")
            return await self._asset(path[len("/assets/") :], request)
        self.counters["http_not_found"] += 1
        return self._text(404, "not found")

    async def _asset(self, name: str, request: Request) -> Response:
        sha = name.removesuffix(".glb")
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            self.counters["http_not_found"] += 1
            return self._text(404, "not an asset hash")
        etag = f'"{sha}"'
        if request.headers.get("If-None-Match") == etag:
            return self._response(304, b"", "application/octet-stream", [("ETag", etag)])
        data = self.assets.get(sha)
        if data is None:
            lock = self._asset_locks.setdefault(sha, asyncio.Lock())
            async with lock:  # concurrent requests for one hash fetch it once
                data = self.assets.get(sha) or await self._fetch_asset(sha)
        if data is None:
            self.counters["http_not_found"] += 1
            return self._text(404, "unknown asset")
        self.counters["assets_served"] += 1
        # A GLB, or the CT brick as stored (gzip): typed as what it is, and never sent with
        # Content-Encoding, so the page gets the very bytes whose SHA-256 it checks.
        media = "application/gzip" if data[:2] == b"\x1f\x8b" else "model/gltf-binary"
        return self._response(200, data, media, [("ETag", etag), ("Cache-Control", _ASSET_CACHE)])

    async def _fetch_asset(self, sha: str) -> bytes | None:
        """The asset's bytes from the render node on a short session of our own."""
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.cfg.render_endpoint)
        try:
            await sock.send(
                encode(
                    Hello(HEADSET_PROTOCOL_VERSION, "web-bridge"),
                    seq=0,
                    t_pub_ns=time.monotonic_ns(),
                )
            )
            await sock.send(encode(AssetRequest(sha), seq=1, t_pub_ns=time.monotonic_ns()))
            deadline = time.monotonic() + _ASSET_TIMEOUT_S
            while (left := deadline - time.monotonic()) > 0:
                try:
                    payload = await asyncio.wait_for(sock.recv(), timeout=left)
                except TimeoutError:
                    break
                try:
                    message = decode(payload, max_bytes=MAX_ASSET_BYTES + 4096).message
                except MessageError:
                    continue
                if isinstance(message, AssetData) and message.sha256 == sha:
                    self.assets[sha] = message.data  # hash checked on decode
                    self.counters["assets_fetched"] += 1
                    return message.data
                if not isinstance(message, Welcome) and getattr(message, "ok", True) is False:
                    break  # a Reply error: unknown asset, protocol...
        finally:
            sock.close(linger=0)
        self.counters["asset_fetch_failed"] += 1
        log.warning("asset %s… could not be fetched from the render node", sha[:12])
        return None

    # --- WebSocket ---------------------------------------------------------------------

    async def handle(self, ws: ServerConnection) -> None:
        """One browser: its session socket, and the three pumps between them."""
        raw = ws.transport.get_extra_info("socket")
        if raw is not None:  # asyncio sets it too; a pose stream must not wait for Nagle
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        query = urllib.parse.parse_qs(
            urllib.parse.urlsplit(ws.request.path if ws.request else "").query
        )
        dealer = self.ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.setsockopt(zmq.RCVHWM, 1000)
        dealer.connect(self.cfg.render_endpoint)
        client = _Client(ws, (query.get("token") or [""])[0], dealer)
        self.clients.add(client)
        self.counters["ws_opened"] += 1
        self.counters["ws_clients"] = len(self.clients)
        log.info("browser connected from %s (%d now)", ws.remote_address, len(self.clients))
        tasks = [
            asyncio.create_task(self._from_browser(client)),
            asyncio.create_task(self._from_render(client)),
            asyncio.create_task(self._to_browser(client)),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            dealer.close(linger=0)
            self.clients.discard(client)
            self.counters["ws_closed"] += 1
            self.counters["ws_clients"] = len(self.clients)
            log.info("browser %s gone (%d now)", ws.remote_address, len(self.clients))

    async def _from_browser(self, client: _Client) -> None:
        try:
            async for frame in client.ws:
                self.counters["ws_received"] += 1
                if isinstance(frame, str):
                    self._count("ws_rejected", "text", "a text frame (the protocol is binary)")
                    continue
                try:
                    message = decode(frame, max_bytes=MAX_PAYLOAD_BYTES).message
                except MessageError as error:
                    self._count("ws_rejected", error.kind, str(error))
                    continue
                if not isinstance(message, FORWARDED):
                    self._count("ws_rejected", "unexpected", f"{message.TYPE} from a browser")
                    continue
                await client.dealer.send(frame)
                self.counters["ws_forwarded"] += 1
        except ConnectionClosed:
            pass

    async def _from_render(self, client: _Client) -> None:
        while True:
            payload = await client.dealer.recv()
            if len(client.reliable) >= _QUEUE_LIMIT:
                self.counters["ws_overflow"] += 1
                log.warning("browser %s reads nothing: closing it", client.ws.remote_address)
                await client.ws.close(1008, "not reading")
                return
            client.reliable.append(payload)
            client.wake.set()

    async def _to_browser(self, client: _Client) -> None:
        try:
            while True:
                await client.wake.wait()
                client.wake.clear()
                while client.reliable:
                    await client.ws.send(client.reliable.popleft())
                    self.counters["session_sent"] += 1
                scene, client.scene = client.scene, None
                if scene is not None:
                    # send() waits while the socket is backed up; meanwhile newer updates
                    # replace the slot and the old ones are never sent (latest-wins).
                    await client.ws.send(scene)
                    self.counters["scene_sent"] += 1
        except ConnectionClosed:
            pass

    async def scene_pump(self) -> None:
        """Scene updates (latest-wins per browser) and, for the status table, each node's
        heartbeat and the tracker's frames at most every ``STATUS_PERIOD_S`` per topic."""
        sub = self.ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, 100)
        for topic in (SCENE_TOPIC, *STATUS_TOPICS):
            sub.setsockopt(zmq.SUBSCRIBE, topic)
        for endpoint in self.scene_endpoints:
            sub.connect(endpoint)
        last_status: dict[bytes, float] = {}
        try:
            while True:
                frames = await sub.recv_multipart()
                if len(frames) != 2:
                    continue
                topic, payload = frames
                if topic == SCENE_TOPIC:
                    self.counters["scene_received"] += 1
                    for client in self.clients:
                        if client.scene is not None:
                            self.counters["scene_superseded"] += 1
                        client.scene = payload
                        client.wake.set()
                    continue
                now = time.monotonic()
                if now - last_status.get(topic, 0.0) < STATUS_PERIOD_S:
                    continue  # a status table needs no more (poses come at up to 1 kHz)
                last_status[topic] = now
                for client in self.clients:
                    if len(client.reliable) < _QUEUE_LIMIT // 2:  # never crowd out replies
                        client.reliable.append(payload)
                        client.wake.set()
                        self.counters["status_sent"] += 1
        finally:
            sub.close(linger=0)

    async def check_tokens(self) -> None:
        """Close the connections whose token has been revoked or has expired."""
        while True:
            await asyncio.sleep(_TOKEN_CHECK_S)
            now = time.time()
            for client in list(self.clients):
                if not client.closing and not self.tokens.valid(client.token, now):
                    client.closing = True
                    self.counters["ws_revoked"] += 1
                    log.warning("browser %s: token revoked or expired", client.ws.remote_address)
                    await client.ws.close(_CLOSE_TOKEN, "pairing token revoked or expired")


def _qr_svg(text: str) -> bytes:
    import qrcode
    import qrcode.image.svg

    image = qrcode.make(text, image_factory=qrcode.image.svg.SvgPathImage)
    out = io.BytesIO()
    image.save(out)
    return out.getvalue()


def _print_qr(text: str) -> None:
    import qrcode

    qr = qrcode.QRCode(border=1)
    qr.add_data(text)
    qr.print_ascii(out=sys.stderr, invert=True)


# --- setup and run -----------------------------------------------------------------------


def _tls(cfg: Config, public_host: str) -> TlsFiles:
    if cfg.cert_file:
        return check_given_tls(cfg.cert_file, cfg.key_file)
    names = local_names((public_host,))
    return ensure_local_tls(web_keys_dir(), names, dt.datetime.now(dt.UTC))


def _public_host(cfg: Config) -> str:
    if cfg.public_host:
        return cfg.public_host
    if cfg.host in ("127.0.0.1", "localhost", "::1"):
        return "localhost"
    names = local_names()
    return names[3] if len(names) > 3 else names[0]


async def _serve(
    cfg: Config, spec: NodeSpec, runtime: NodeRuntime, stop: threading.Event, tls: TlsFiles
) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.cert_file, tls.key_file)
    tokens = TokenStore(token_file())
    ctx = zmq.asyncio.Context.shadow(bus.context())
    bridge = Bridge(
        cfg,
        counters=runtime.counters,
        tokens=tokens,
        scene_endpoints=spec.subscribe_endpoints,
        ctx=ctx,
    )
    async with serve(
        bridge.handle,
        cfg.host,
        cfg.port,
        ssl=context,
        process_request=bridge.process_request,
        compression=None,  # small binary frames: deflate only adds latency
        max_size=MAX_PAYLOAD_BYTES,
        max_queue=64,
        ping_interval=5,
        ping_timeout=10,
        server_header="ornav-web",
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        token = issue_token(token_file(), ttl_s=cfg.token_ttl_s, label=spec.name, now_s=time.time())
        host = _public_host(cfg)
        base = f"https://{host}:{port}/"
        bridge.pair_url = f"{base}#token={token}"
        if cfg.url_file:
            write_private_text(Path(cfg.url_file), bridge.pair_url + "\n")
        log.info("browser page at %s (pairing token valid %.0f h)", base, cfg.token_ttl_s / 3600)
        log.info("pair a headset: open %s", bridge.pair_url)
        if cfg.print_qr:
            _print_qr(bridge.pair_url)
        runtime.counters["ws_clients"] = 0
        tasks = [
            asyncio.create_task(bridge.scene_pump()),
            asyncio.create_task(bridge.check_tokens()),
        ]
        runtime.ready()
        try:
            while not stop.is_set():
                runtime.service()
                for task in tasks:
                    if task.done() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
                await asyncio.sleep(_SERVICE_S)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for client in list(bridge.clients):
                await client.ws.close(1001, "bridge stopping")


def run(cfg: Config, spec: NodeSpec, stop: threading.Event) -> int:
    try:
        tls = _tls(cfg, _public_host(cfg))
        TokenStore(token_file()).load()  # an unreadable store: fail now, in one line
    except (TlsError, TokenError) as error:
        log.error("%s: %s", spec.name, error)
        return 2
    if not (STATIC_DIR / "index.html").is_file():
        log.error("%s: %s is missing", spec.name, STATIC_DIR / "index.html")
        return 2
    if not (NODE_MODULES / "three").is_dir():
        log.warning("%s: %s absent: run `npm ci` in render/web", spec.name, NODE_MODULES)
    with NodeRuntime(spec, stop) as runtime:
        try:
            asyncio.run(_serve(cfg, spec, runtime, stop, tls))
        except OSError as error:
            log.error("%s: cannot listen on %s:%d: %s", spec.name, cfg.host, cfg.port, error)
            return 3
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return node_main(argv, run=run, description=__doc__ or "")


if __name__ == "__main__":
    raise SystemExit(main())
