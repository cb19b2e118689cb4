"""OSCQuery: the parameter namespace as JSON over HTTP, so ossia score, Chataigne, VDMX, MadMapper and
the ossia Max/Pd bindings discover every control without configuration.

    GET /                       the whole tree
    GET /distill/gain           one node: FULL_PATH, TYPE, RANGE, CLIPMODE, ACCESS, VALUE, DESCRIPTION
    GET /distill/gain?VALUE     one attribute: {"VALUE": [1.0]}   (204 if the node has none, 400 if unknown)
    GET /?HOST_INFO             NAME, OSC_PORT, OSC_TRANSPORT, EXTENSIONS

Values are read from the registry at each request (live). Types: "f"/"i" with RANGE and CLIPMODE "both"
(the engine clamps), on/off controls as "T" (OSC true/false; 1/0 ints are accepted too), triggers as "N",
`/distill/mix` as one "f" per world, `/distill/cue` as "if". Served on loopback unless --osc-bind-any,
only to senders in --allow. When the optional `zeroconf` package is installed the server is advertised
as `_oscjson._tcp` (and the OSC port as `_osc._udp`): on loopback only when bound to loopback (nothing
else could reach it), on every interface with --osc-bind-any.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Sequence
from urllib.parse import unquote, urlsplit

from distill_live.control.params import PREFIX, Param, ParamRegistry

from .namespace import TYPES
from .server import OscConfigError, check_bind

log = logging.getLogger("distill.oscquery")

DEFAULT_OSCQUERY_PORT = 9001

ATTRIBUTES = ("FULL_PATH", "CONTENTS", "TYPE", "RANGE", "CLIPMODE", "ACCESS", "VALUE", "DESCRIPTION")
EXTENSIONS = {
    "ACCESS": True, "VALUE": True, "RANGE": True, "DESCRIPTION": True, "CLIPMODE": True,
    "TAGS": False, "EXTENDED_TYPE": False, "UNIT": False, "CRITICAL": False, "LISTEN": False,
    "PATH_CHANGED": False, "PATH_RENAMED": False, "PATH_ADDED": False, "PATH_REMOVED": False,
}
CONTAINERS = {
    PREFIX: "distill: a neural instrument",
    f"{PREFIX}/world": "weights of the model's worlds (normalised)",
    f"{PREFIX}/descriptor": "descriptor targets: hold one with a value, release it with /free",
}


def param_node(p: Param, registry: ParamRegistry, values: dict) -> dict:
    """The OSCQuery JSON of one parameter."""
    node: dict[str, Any] = {"FULL_PATH": p.address, "DESCRIPTION": p.description, "TYPE": TYPES[p.types][1]}
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
        node.update(RANGE=[{"MIN": int(lo), "MAX": int(hi)}, {"MIN": 0.0, "MAX": 10.0}], CLIPMODE=["both", "both"])
    node["ACCESS"] = 3 if "VALUE" in node else 2
    return node


def tree(registry: ParamRegistry) -> dict:
    """The whole namespace as one OSCQuery JSON object, values as they are now."""
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
        leaf = param_node(p, registry, values)
        if parts[-1] in contents:  # already created as a container (e.g. descriptor/x before descriptor/x/free)
            leaf["CONTENTS"] = contents[parts[-1]].get("CONTENTS", {})
        contents[parts[-1]] = leaf
    return root


def find(root: dict, path: str) -> dict | None:
    node = root
    for part in [p for p in path.split("/") if p]:
        node = node.get("CONTENTS", {}).get(part)
        if node is None:
            return None
    return node


class _Handler(BaseHTTPRequestHandler):
    server: "_Http"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # no stderr line per request
        log.debug("%s " + fmt, self.client_address[0], *args)

    def do_GET(self):  # noqa: N802
        owner = self.server.owner
        url = urlsplit(self.path)
        path = unquote(url.path) or "/"
        attr = url.query.split("=", 1)[0].upper() if url.query else ""
        if attr == "HOST_INFO":
            return self._json(200, owner.host_info())
        node = find(tree(owner.engine.registry), path)
        if node is None:
            return self._json(404, {"ERROR": f"no OSC node at {path}"})
        if not attr:
            return self._json(200, node)
        if attr not in ATTRIBUTES:
            return self._json(400, {"ERROR": f"unknown or unsupported attribute {attr}"})
        if attr not in node:
            return self._status(204)
        return self._json(200, {attr: node[attr]})

    def do_HEAD(self):  # noqa: N802
        self._status(405)

    do_POST = do_PUT = do_DELETE = do_HEAD  # noqa: N815

    def _json(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _status(self, code: int) -> None:
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()


class _Http(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 16

    def __init__(self, address, owner: "OscQueryServer", family: int):
        self.address_family = family
        self.owner = owner
        super().__init__(address, _Handler)

    def verify_request(self, request, client_address) -> bool:
        return self.owner.allowed(client_address[0])


class OscQueryServer:
    def __init__(self, engine, host: str = "127.0.0.1", port: int = DEFAULT_OSCQUERY_PORT, osc_port: int | None = None,
                 bind_any: bool = False, allow: Sequence = (), name: str = "distill", advertise: bool = True,
                 osc_transport: str = "UDP"):
        self.engine = engine
        self.name = name
        self.osc_port = osc_port
        self.osc_transport = osc_transport
        self.host = host
        self.allow = [ipaddress.ip_network(a, strict=False) if isinstance(a, str) else a for a in allow]
        infos = check_bind(host, bind_any, "OSCQuery")
        family, sockaddr = infos[0][0], infos[0][4]
        try:
            self.http = _Http((sockaddr[0], port), self, family)
        except OSError as e:
            raise OscConfigError(f"cannot serve OSCQuery on {host}:{port} ({e.strerror or e}); "
                                 f"pick another --oscquery-port or use --no-oscquery") from None
        self.port = self.http.server_address[1]
        self._thread = threading.Thread(target=self.http.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="distill-oscquery", daemon=True)
        self._thread.start()
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
        self.http.shutdown()
        self.http.server_close()
        self._thread.join(timeout=2)


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
