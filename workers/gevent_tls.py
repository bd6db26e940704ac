"""The gunicorn worker: gevent, with the gateway's own TLS termination.

gunicorn's gevent worker hands a TLS socket to the request parser with no
handshake deadline, and it reads the client certificate nowhere. This worker
serves plain listening sockets and does TLS per connection itself:

- the handshake runs under ``server.tls.handshake_timeout_s``; a client that
  does not finish it in time, or fails it, is dropped with one debug line (no
  traceback);
- the verified client certificate's SPIFFE ID is read once per connection and
  handed to the application in ``environ["mitrity.connection"]``;
- the admin listener is plaintext on loopback, TLS (no client certificates)
  otherwise;
- malformed HTTP gets the gateway's JSON error (400, or 431 for oversized
  headers) and the connection is closed.

Import order: gunicorn's ``GeventWorker.init_process`` patches the standard
library with gevent first; only then does ``load_wsgi`` import the gateway
(and with it ``requests``/``ssl``) and build the SSL contexts.
"""

import signal
import socket
import ssl
from dataclasses import dataclass

import gevent
from gunicorn.http import errors as http_errors
from gunicorn.workers.ggevent import GeventWorker

from gateway import config as gateway_config
from gateway.errors import BodyTimeout, error_body, new_request_id, status_line
from gateway.identity import spiffe_id_from_der

# After the handshake, one blocking send or receive on the agent's socket may
# take at most this long (a client that stops reading is cut).
CLIENT_IO_TIMEOUT_S = 60.0
_CLIENT_CERT_MODES = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}


# Held (blocked) by the master across fork() and released by the worker once
# its own handlers are installed; see gunicorn.conf.py.
HELD_ACROSS_FORK = frozenset((signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1, signal.SIGABRT))


@dataclass(frozen=True)
class Connection:
    role: str                  # "data" or "admin"
    spiffe_id: str | None      # from a verified client certificate, in a trusted domain


def server_context(config, client_certs=True):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config["server.tls.cert_file"], config["server.tls.key_file"])
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(["http/1.1"])
    ca_file = config["server.tls.client_ca_file"]
    mode = config["server.tls.client_cert"] if client_certs else "none"
    if ca_file and mode != "none":
        context.load_verify_locations(cafile=ca_file)
        context.verify_mode = _CLIENT_CERT_MODES[mode]
    return context


class GatewayWorker(GeventWorker):

    def load_wsgi(self):
        # gevent has patched ssl and socket by now (init_process -> patch()).
        self.gateway_config = gateway_config.ACTIVE or gateway_config.load_from_env()
        cfg = self.gateway_config
        self.handshake_timeout_s = cfg["server.tls.handshake_timeout_s"]
        self.header_timeout_s = cfg["server.header_timeout_s"]
        self.trust_domains = frozenset(cfg["identity.spiffe_trust_domains"])
        host, port = gateway_config.parse_bind(cfg["admin.bind"])
        self.admin_port = port
        self.data_tls = server_context(cfg) if cfg["server.tls.enabled"] else None
        admin_tls = not gateway_config.is_loopback(host)
        self.admin_tls = server_context(cfg, client_certs=False) if admin_tls else None
        self.connections = {}
        self.idle = set()      # greenlets of kept-alive connections waiting for their next request
        self.served = set()    # greenlets whose connection has carried a request
        super().load_wsgi()
        app = self.wsgi

        def with_connection(environ, start_response):
            environ["mitrity.connection"] = self.connections.get(id(environ["gunicorn.socket"]))
            return app(environ, start_response)
        self.wsgi = with_connection

    def init_signals(self):
        super().init_signals()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_ACROSS_FORK)

    def timeout_ctx(self):
        # gunicorn calls this before reading each request's headers. It bounds
        # reading the headers and the keep-alive idle time. A connection that
        # has served a request is idle until handle_request; a new one is not:
        # its first request is on its way, and a reload must not cut it.
        current = gevent.getcurrent()
        if current in self.served:
            self.idle.add(current)
        return gevent.Timeout(self.header_timeout_s, False)

    def handle_request(self, listener_name, req, sock, addr):
        current = gevent.getcurrent()
        self.idle.discard(current)
        self.served.add(current)
        return super().handle_request(listener_name, req, sock, addr)

    def handle_exit(self, sig, frame):
        # SIGTERM / graceful reload: in-flight calls finish, but idle
        # keep-alive connections would hold the worker for a whole header
        # timeout; close them now.
        super().handle_exit(sig, frame)
        gevent.spawn(self._close_idle)

    def _close_idle(self):
        for greenlet in list(self.idle):
            greenlet.kill(block=False)

    def handle(self, listener, client, addr):
        admin = listener.getsockname()[1] == self.admin_port
        context = self.admin_tls if admin else self.data_tls
        client.setblocking(1)
        spiffe_id = None
        if context is not None:
            client = self._handshake(context, client, addr)
            if client is None:
                return
            if not admin and context.verify_mode != ssl.CERT_NONE:
                spiffe_id = spiffe_id_from_der(client.getpeercert(binary_form=True), self.trust_domains)
        client.settimeout(CLIENT_IO_TIMEOUT_S)
        key = id(client)
        self.connections[key] = Connection("admin" if admin else "data", spiffe_id)
        try:
            super().handle(listener, client, addr)
        finally:
            self.connections.pop(key, None)
            current = gevent.getcurrent()
            self.idle.discard(current)
            self.served.discard(current)

    def _handshake(self, context, client, addr):
        try:
            with gevent.Timeout(self.handshake_timeout_s):
                client.settimeout(self.handshake_timeout_s)
                tls = context.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
                tls.do_handshake()
                return tls
        except (gevent.Timeout, OSError) as exc:  # ssl.SSLError is an OSError
            self.log.debug("TLS handshake from %s failed: %s", addr[0] if addr else "?", type(exc).__name__)
            try:
                client.close()
            except OSError:
                pass
            return None

    def handle_error(self, req, client, addr, exc):
        """Malformed HTTP: the gateway's JSON error, then close (SPEC section 5).

        The request could not be parsed, so its route is unknown: the answer
        carries the body both SDKs read, and says that nothing was forwarded.
        """
        if isinstance(exc, (BodyTimeout, gevent.GreenletExit)):
            self.log.debug("closing a connection from %s: %s", addr[0] if addr else "?", type(exc).__name__)
            return
        if isinstance(exc, ssl.SSLError):
            self.log.debug("TLS error on a connection from %s: %s", addr[0] if addr else "?", type(exc).__name__)
            return
        if isinstance(exc, (http_errors.LimitRequestHeaders, http_errors.LimitRequestLine)):
            status, code = 431, "headers_too_large"
        elif isinstance(exc, http_errors.ParseException):
            status, code = 400, "invalid_request"
        else:
            self.log.error("unexpected %s while serving a connection", type(exc).__name__)
            status, code = 500, "internal_error"
        from gateway import metrics  # after the fork: see gateway.metrics
        metrics.observe_refused(code)
        body = error_body(code, None, "Malformed HTTP request." if code == "invalid_request" else None)
        head = (f"HTTP/1.1 {status_line(status)}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\nX-Request-Id: {new_request_id()}\r\n"
                f"X-Mitrity-Decision: blocked\r\nX-Mitrity-Reason: {code}\r\n\r\n")
        try:
            client.sendall(head.encode() + body)
            client.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
