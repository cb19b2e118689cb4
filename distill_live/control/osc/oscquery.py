"""OSCQuery: the parameter namespace as JSON over HTTP, and its values live over a WebSocket on the same
port, so ossia score, Chataigne, VDMX, MadMapper and the ossia Max/Pd bindings discover every control
without configuration and follow it as it moves.

    GET /                       the whole tree
    GET /distill/gain           one node: FULL_PATH, TYPE, RANGE, CLIPMODE, ACCESS, VALUE, DESCRIPTION
    GET /distill/gain?VALUE     one attribute: {"VALUE": [1.0]}   (204 if the node has none, 400 if unknown)
    GET /?HOST_INFO             NAME, OSC_PORT, OSC_TRANSPORT, EXTENSIONS (LISTEN, PATH_CHANGED)
    GET /ui/                    the web page (control/web/): every control, meters, the code grid
    ws://host:port/             the WebSocket (the OSCQuery spec's bi-directional part):
        {"COMMAND": "LISTEN", "DATA": "/distill/gain"}   from then on, every change of that node comes as a
        {"COMMAND": "IGNORE", "DATA": "/distill/gain"}   binary OSC message (`/distill/gain 0.5`), until IGNORE
        binary OSC from the client                       applied as if it came to the OSC port
        {"COMMAND": "PATH_CHANGED", "DATA": "/distill/preset/recall"}   from the server: re-read that node
                                                                        (a preset was saved: its VALS changed)
        {"COMMAND": "BUNDLE", "DATA": true}      distill's own: from then on, what one feed tick sends this
                                                 client comes as one OSC bundle (the web page asks for it: 30
                                                 WebSocket messages a second instead of about 140)

Values are read from the registry at each request (live). Types: "f"/"i" with RANGE and CLIPMODE "both"
(the engine clamps), on/off controls as "T" (OSC true/false; 1/0 ints are accepted too), triggers as "N",
`/distill/mix` as one "f" per world, `/distill/cue` and `/distill/preset/recall` as "if" (the saved
presets are the VALS of the recall's RANGE). Read-only nodes (ACCESS 1) carry what the engine measures:
`/distill/meter`, `/distill/codes` (every frame's codes, coarse to fine), `/distill/frame` (the number of
the last frame sent, what `/distill/region/start` takes), `/distill/stats`, and
`/distill/measured` (the output's loudness, brightness and noisiness, 0..1 of the training range),
each measured only while some client LISTENs to it.
HTTP and the WebSocket are one server (the `websockets` package), on loopback unless --osc-bind-any,
only for clients in --allow. When the optional `zeroconf` package is installed the server is
advertised as `_oscjson._tcp` (and the OSC port as `_osc._udp`): on loopback only when bound to
loopback (nothing else could reach it), on every interface with --osc-bind-any.
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
import threading
from http import HTTPStatus
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import unquote, urlsplit

from distill_live.control.params import PREFIX, Param, ParamRegistry

from .livefeed import FEED_RATE, LiveFeed, osc_bundle, telemetry_nodes
from .namespace import TYPES
from .server import OscConfigError, check_bind
from .wire import MAX_PACKET, one_line

log = logging.getLogger("distill.oscquery")

DEFAULT_OSCQUERY_PORT = 9001
MAX_LISTEN = 1024  # addresses one WebSocket client may LISTEN to
PAGE = Path(__file__).resolve().parent.parent / "web"  # the web page's files, shipped in the package
PAGE_FILES = {"index.html": "text/html; charset=utf-8", "page.js": "text/javascript; charset=utf-8",
              "page.css": "text/css; charset=utf-8"}
UNITS = {"s": "time.second", "dBFS": "gain.db"}  # the registry's units as OSCQuery's UNIT names them

ATTRIBUTES = ("FULL_PATH", "CONTENTS", "TYPE", "RANGE", "CLIPMODE", "ACCESS", "VALUE", "DESCRIPTION", "TAGS", "UNIT")
EXTENSIONS = {
    "ACCESS": True, "VALUE": True, "RANGE": True, "DESCRIPTION": True, "CLIPMODE": True,
    "TAGS": True, "EXTENDED_TYPE": False, "UNIT": True, "CRITICAL": False, "LISTEN": True,
    "PATH_CHANGED": True, "PATH_RENAMED": False, "PATH_ADDED": False, "PATH_REMOVED": False,
}
CONTAINERS = {
    PREFIX: "distill: a neural instrument",
    f"{PREFIX}/world": "weights of the model's worlds (normalised)",
    f"{PREFIX}/descriptor": "descriptor targets: hold one with a value, release it with /free",
    f"{PREFIX}/preset": "snapshots of every control: save one by number, recall it with a crossfade",
}


def param_node(p: Param, registry: ParamRegistry, values: dict, presets=None) -> dict:
    """The OSCQuery JSON of one parameter; `presets`: the saved ones, the VALS of the recall's RANGE."""
    node: dict[str, Any] = {"FULL_PATH": p.address, "DESCRIPTION": p.description, "TYPE": TYPES[p.types][1],
                            "TAGS": [p.group]}
    lo, hi = p.range
    value = values.get(p.address)
    if p.types in ("f", "i"):
        num = float if p.types == "f" else int
        node.update(RANGE=[{"MIN": num(lo), "MAX": num(hi)}], CLIPMODE=["both"])
        if value is not None:
            node["VALUE"] = [num(value)]
    elif p.types == "b":
        if value is not None:
            node["VALUE"] = [bool(value)]
    elif p.types == "f*":
        n = len(registry.worlds)
        node.update(TYPE=node["TYPE"] * n, RANGE=[{"MIN": 0.0, "MAX": 1.0}] * n, CLIPMODE=["both"] * n,
                    VALUE=[float(values.get(f"{PREFIX}/world/{w}", 0.0)) for w in registry.worlds])
    elif p.types == "i,f?":
        node.update(RANGE=[{"MIN": int(lo), "MAX": int(hi)}, {"MIN": 0.0, "MAX": 10.0}], CLIPMODE=["both", "both"],
                    UNIT=["none", "time.second"])
        if p.name == "preset/recall" and presets is not None:
            node["RANGE"][0]["VALS"] = presets.numbers()
    if p.unit in UNITS:
        node["UNIT"] = [UNITS[p.unit]]
    node["ACCESS"] = 3 if "VALUE" in node else 2
    return node


def tree(registry: ParamRegistry, presets=None) -> dict:
    """The whole namespace as one OSCQuery JSON object, values as they are now, and the read-only
    nodes of what the engine measures."""
    values, _ = registry.snapshot()
    root = {"FULL_PATH": "/", "ACCESS": 0, "DESCRIPTION": "root", "CONTENTS": {}}
    for p in registry.params.values():
        node = root
        parts = p.address.strip("/").split("/")
        for depth, part in enumerate(parts[:-1]):
            path = "/" + "/".join(parts[:depth + 1])
            node = node.setdefault("CONTENTS", {}).setdefault(
                part, {"FULL_PATH": path, "ACCESS": 0, "DESCRIPTION": CONTAINERS.get(path, "")})
        contents = node.setdefault("CONTENTS", {})
        leaf = param_node(p, registry, values, presets)
        if parts[-1] in contents:  # already created as a container (e.g. descriptor/x before descriptor/x/free)
            leaf["CONTENTS"] = contents[parts[-1]].get("CONTENTS", {})
        contents[parts[-1]] = leaf
    for leaf in telemetry_nodes(registry):
        root["CONTENTS"]["distill"]["CONTENTS"][leaf["FULL_PATH"].rsplit("/", 1)[1]] = leaf
    return root


def find(root: dict, path: str) -> dict | None:
    node = root
    for part in [p for p in path.split("/") if p]:
        node = node.get("CONTENTS", {}).get(part)
        if node is None:
            return None
    return node


class OscQueryServer:
    """OSCQuery over HTTP and its WebSocket, and the web page, on one port, served by one thread (an asyncio
    loop). `osc`: the OSC server that applies what WebSocket clients send (None: they can only listen)."""

    def __init__(self, engine, host: str = "127.0.0.1", port: int = DEFAULT_OSCQUERY_PORT, osc_port: int | None = None,
                 bind_any: bool = False, allow: Sequence = (), name: str = "distill", advertise: bool = True,
                 osc_transport: str = "UDP", osc=None):
        self.engine = engine
        self.name = name
        self.osc, self.osc_port, self.osc_transport = osc, osc_port, osc_transport
        self.host = host
        self.allow = [ipaddress.ip_network(a, strict=False) if isinstance(a, str) else a for a in allow]
        infos = check_bind(host, bind_any, "OSCQuery")
        family, sockaddr = infos[0][0], infos[0][4]
        try:
            self.sock = socket.create_server((sockaddr[0], port), family=family, backlog=16)
        except OSError as e:
            raise OscConfigError(f"cannot serve OSCQuery on {host}:{port} ({e.strerror or e}); "
                                 f"pick another --oscquery-port or use --no-oscquery") from None
        self.port = self.sock.getsockname()[1]
        self.feed = LiveFeed(engine)
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), name="distill-oscquery",
                                        daemon=True)
        self._thread.start()
        self._ready.wait(10)
        self.loopback = all(ipaddress.ip_address(i[4][0].split("%")[0]).is_loopback for i in infos)
        self.advert = Advert(name, self.port, osc_port, self.loopback) if advertise else None
        log.info("OSCQuery on http://%s:%d/", host, self.port)

    def allowed(self, ip: str) -> bool:
        if not self.allow:
            return True
        try:
            addr = ipaddress.ip_address(ip.split("%")[0])
        except ValueError:
            return False
        addr = getattr(addr, "ipv4_mapped", None) or addr
        return any(addr in n for n in self.allow if n.version == addr.version)

    def host_info(self) -> dict:
        info: dict[str, Any] = {"NAME": self.name, "EXTENSIONS": dict(EXTENSIONS)}
        if self.osc_port is not None:
            info.update(OSC_PORT=self.osc_port, OSC_TRANSPORT=self.osc_transport)
            try:
                if not ipaddress.ip_address(self.host).is_unspecified:
                    info["OSC_IP"] = self.host
            except ValueError:  # a host name: clients use the address they reached us on
                pass
        return info

    def close(self) -> None:
        if self.advert is not None:
            self.advert.close()
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=5)
        self.feed.close()
        self.sock.close()

    # -- the server's thread ---------------------------------------------------------------------

    async def _serve(self) -> None:
        from websockets.asyncio.server import serve

        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        async with serve(self._client, sock=self.sock, process_request=self._http, max_size=MAX_PACKET,
                         ping_interval=10, ping_timeout=10, compression=None, server_header=None,
                         logger=log) as server:
            self._ready.set()
            ticker = asyncio.create_task(self._tick(server))
            await self._stopping.wait()
            ticker.cancel()

    async def _tick(self, server) -> None:
        """Send every LISTENing client what changed, FEED_RATE times a second."""
        from websockets.asyncio.server import broadcast

        while True:
            await asyncio.sleep(1.0 / FEED_RATE)
            try:
                clients = [c for c in server.connections if getattr(c, "listening", None) is not None]
                messages = self.feed.poll(set().union(*(c.listening for c in clients)))
                for text in (m for m in messages if isinstance(m, str)):  # PATH_CHANGED: to everyone
                    broadcast(clients, text)
                osc = [m for m in messages if not isinstance(m, str)]
                for address, data in osc:
                    broadcast([c for c in clients if address in c.listening and not c.bundled], data)
                for c in clients:
                    mine = [data for address, data in osc if address in c.listening] if c.bundled else []
                    if mine:
                        broadcast([c], osc_bundle(mine))
            except Exception as e:  # a feed problem must never stop the server
                log.warning("OSCQuery feed problem: %s", one_line(e))

    def _http(self, connection, request):
        """Every HTTP request: refuse what --allow does not cover, let WebSocket upgrades through, answer
        the rest (OSCQuery JSON, the web page)."""
        from websockets.datastructures import Headers
        from websockets.http11 import Response

        def respond(code: int, body: bytes = b"", kind: str = "application/json", more=()) -> Response:
            headers = Headers([("Content-Length", str(len(body))), ("Connection", "close"), *more])
            if body:
                headers["Content-Type"] = kind
            return Response(code, HTTPStatus(code).phrase, headers, body)

        def json_response(code: int, body: dict) -> Response:
            return respond(code, json.dumps(body).encode())

        ip = connection.remote_address[0]
        if not self.allowed(ip):
            log.warning("refused an OSCQuery request from %s: not in --allow", ip)
            return respond(403, f"{ip} is not in distill's --allow\n".encode(), "text/plain")
        if "websocket" in request.headers.get("Upgrade", "").lower():
            return None  # the WebSocket: _client takes over
        url = urlsplit(request.path)
        path = unquote(url.path) or "/"
        if path == "/ui" or path.startswith("/ui/"):
            return self._page(path[len("/ui"):], respond)
        attr = url.query.split("=", 1)[0].upper() if url.query else ""
        if attr == "HOST_INFO":
            return json_response(200, self.host_info())
        node = find(tree(self.engine.registry, self.engine.presets), path)
        if node is None:
            return json_response(404, {"ERROR": f"no OSC node at {path}"})
        if not attr:
            return json_response(200, node)
        if attr not in ATTRIBUTES:
            return json_response(400, {"ERROR": f"unknown or unsupported attribute {attr}"})
        if attr not in node:
            return respond(204)
        return json_response(200, {attr: node[attr]})

    @staticmethod
    def _page(path: str, respond):
        """A file of the web page (control/web/); `/ui` is sent on to `/ui/`, which is its index.html."""
        if not path:
            return respond(301, more=[("Location", "/ui/")])
        name = path.lstrip("/") or "index.html"
        if name not in PAGE_FILES:
            return respond(404, b"no such file\n", "text/plain")
        return respond(200, (PAGE / name).read_bytes(), PAGE_FILES[name], more=[("Cache-Control", "no-cache")])

    async def _client(self, connection) -> None:
        """One WebSocket client: LISTEN and IGNORE (text, JSON), OSC packets (binary) for the OSC server."""
        connection.bundled = False  # until it sends BUNDLE
        connection.listening = set()
        ip = connection.remote_address[0]
        async for message in connection:
            if isinstance(message, bytes):
                if self.osc is not None:
                    self.osc.feed(message, ip)
                continue
            try:
                command = json.loads(message)
                verb, path = command["COMMAND"], command["DATA"]
            except (ValueError, TypeError, KeyError):
                continue  # not a command this server knows: the spec says to ignore it
            if verb == "LISTEN" and isinstance(path, str) and len(connection.listening) < MAX_LISTEN:
                connection.listening.add(path)
                now = self.feed.current(path)
                if now is not None:  # what it is now, so the client starts in step
                    await connection.send(now)
            elif verb == "IGNORE":
                connection.listening.discard(path)
            elif verb == "BUNDLE":
                connection.bundled = path is True


class Advert:
    """Zeroconf `_oscjson._tcp` and `_osc._udp` adverts, registered in a background thread (it takes a
    moment). Without the `zeroconf` package, or when the network refuses, one log line and nothing else."""

    def __init__(self, name: str, http_port: int, osc_port: int | None, loopback: bool):
        self.registered = threading.Event()
        self.failed: str | None = None
        self._stop = threading.Event()
        self._args = (name, http_port, osc_port, loopback)
        try:
            import zeroconf  # noqa: F401
        except ImportError:
            self.failed = "the zeroconf package is not installed"
            log.info("no zeroconf advert: %s (pip install zeroconf)", self.failed)
            self._thread = None
            return
        self._thread = threading.Thread(target=self._run, name="distill-zeroconf", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        zc = None
        try:
            from zeroconf import InterfaceChoice, IPVersion, ServiceInfo, Zeroconf

            name, http_port, osc_port, loopback = self._args
            if loopback:
                addresses = ["127.0.0.1"]
                zc = Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
            else:
                import ifaddr

                addresses = [ip.ip for a in ifaddr.get_adapters() for ip in a.ips
                             if isinstance(ip.ip, str) and not ipaddress.ip_address(ip.ip).is_loopback]
                zc = Zeroconf(interfaces=InterfaceChoice.All, ip_version=IPVersion.V4Only)
            server = f"{socket.gethostname().split('.')[0] or 'distill'}.local."
            infos = [ServiceInfo("_oscjson._tcp.local.", f"{name}._oscjson._tcp.local.", port=http_port,
                                 parsed_addresses=addresses, server=server, properties={})]
            if osc_port is not None:
                infos.append(ServiceInfo("_osc._udp.local.", f"{name}._osc._udp.local.", port=osc_port,
                                         parsed_addresses=addresses, server=server, properties={}))
            for info in infos:
                if self._stop.is_set():
                    break
                zc.register_service(info, allow_name_change=True)
            else:
                self.registered.set()
            self._stop.wait()
            zc.unregister_all_services()
        except Exception as e:  # no multicast route, no interface...: the server works without it
            self.failed = " ".join(str(e).split()) or type(e).__name__
            log.info("no zeroconf advert: %s", self.failed)
        finally:
            if zc is not None:
                try:
                    zc.close()
                except Exception:
                    pass

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)  # still registering: it unregisters and closes by itself
