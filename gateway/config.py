"""Every gateway setting, declared once.

A setting has a dotted key (its place in the YAML file), a default, a check
that turns the YAML value into the value the code uses (or raises
``ValueError`` with a reason), and a one-line doc. ``load()`` walks the YAML
document against this table: an unknown key, or a value its check refuses, is
a ``ConfigError`` that names the key, and the caller exits with that one line.

The table is also the source of ``docs/configuration.md``'s key list
(``mitrity-llm-gateway config-keys`` prints it) and a test checks the two agree.

Relative paths are resolved against the working directory at load time, so
the master, the workers and policy-sync all see the same absolute paths.
"""

import ipaddress
import os
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit

import yaml

PROVIDER_NAMES = ("anthropic", "openai")
DEFAULT_PROVIDERS = {
    "anthropic": {"upstream": "https://api.anthropic.com"},
    "openai": {"upstream": "https://api.openai.com"},
}
MIN_HOLDBACK_BYTES = 256
MAX_HOLDBACK_BYTES = 1024 * 1024


class ConfigError(Exception):
    """A configuration problem, phrased as one line that names the key."""

    def __init__(self, key, reason):
        super().__init__(f"{key}: {reason}" if key else reason)
        self.key = key
        self.reason = reason


# -- checks: each takes the YAML value and returns the value the code uses ----

def _bool(value):
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _int(low, high):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("must be an integer")
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value
    return check


def _number(low, high):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("must be a number")
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return float(value)
    return check


def _choice(*choices):
    def check(value):
        if value not in choices:
            raise ValueError("must be one of " + ", ".join(choices))
        return value
    return check


def _text(value):
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    return value


def _optional(check):
    def optional(value):
        return None if value is None else check(value)
    return optional


def _path(value):
    return os.path.abspath(_text(value))


def _text_list(value):
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("must be a list of non-empty strings")
    return tuple(value)


def _header_name(value):
    value = _text(value).lower()
    if not all(c.isalnum() or c == "-" for c in value):
        raise ValueError("must be an HTTP header name")
    if value in ("authorization", "x-api-key", "host", "content-length"):
        raise ValueError("must not be a header the provider needs")
    return value


def parse_bind(value):
    """``host:port`` (``[v6]:port`` for IPv6) -> (host, port)."""
    value = _text(value)
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("must be host:port")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host:
        raise ValueError("must name a host")
    return host, int(port)


def is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bind(value):
    parse_bind(value)
    return value


def _https_url(value):
    value = _text(value)
    parts = urlsplit(value)
    # The refusal names the URL without any user:password@ it may carry.
    shown = repr(parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl())
    if parts.scheme != "https":
        raise ValueError(f"must be an https:// URL, not {shown}")
    if not parts.hostname or parts.query or parts.fragment or parts.username:
        raise ValueError(f"must be https://host[:port][/path], not {shown}")
    return value.rstrip("/")


def _providers(value):
    if not isinstance(value, dict) or not value:
        raise ValueError("must be a non-empty map of provider name to {upstream: https://...}")
    providers = {}
    for name, entry in value.items():
        if name not in PROVIDER_NAMES:
            raise ValueError(f"unknown provider {name!r} (known: {', '.join(PROVIDER_NAMES)})")
        if not isinstance(entry, dict) or set(entry) != {"upstream"}:
            raise ValueError(f"{name} must be {{upstream: https://...}}")
        try:
            providers[name] = _https_url(entry["upstream"])
        except ValueError as exc:
            raise ValueError(f"{name}.upstream {exc}") from None
    return providers


def _control_plane(value):
    # SPEC section 7. The control-plane source is not in this build yet; refusing
    # to start is honest, silently serving the file policy instead would not be.
    raise ValueError("the control-plane policy source is not available in this version; use policy.file")


@dataclass(frozen=True)
class Setting:
    key: str
    default: Any
    check: Callable[[Any], Any]
    doc: str


SETTINGS = (
    Setting("server.bind", "0.0.0.0:8443", _bind,
            "Data-plane listener, host:port."),
    Setting("server.workers", None, _optional(_int(1, 256)),
            "Worker processes; env WEB_CONCURRENCY overrides; default 2 per CPU core."),
    Setting("server.worker_connections", 1000, _int(1, 100000),
            "Concurrent connections one worker serves."),
    Setting("server.tls.enabled", True, _bool,
            "Serve TLS. Off is refused unless server.bind is a loopback address."),
    Setting("server.tls.cert_file", None, _optional(_path),
            "Server certificate chain (PEM); required when TLS is enabled."),
    Setting("server.tls.key_file", None, _optional(_path),
            "Server private key (PEM); required when TLS is enabled."),
    Setting("server.tls.client_ca_file", None, _optional(_path),
            "Trust anchors for agents' client certificates (PEM)."),
    Setting("server.tls.client_cert", "optional", _choice("required", "optional", "none"),
            "Client certificates: required, optional or none (required needs client_ca_file)."),
    Setting("server.tls.handshake_timeout_s", 10.0, _number(0.1, 300),
            "A client that has not finished its TLS handshake by then is dropped."),
    Setting("server.max_request_bytes", 10 * 1024 * 1024, _int(1024, 1024 * 1024 * 1024),
            "Largest request body; larger bodies get 413."),
    Setting("server.header_timeout_s", 10.0, _number(0.1, 300),
            "Time allowed to receive a request's headers (also the keep-alive idle limit)."),
    Setting("server.body_timeout_s", 60.0, _number(0.1, 3600),
            "Time allowed to receive a request's whole body."),
    Setting("server.graceful_timeout_s", 30.0, _number(0, 3600),
            "On SIGTERM or SIGHUP, how long in-flight calls and streams may take to finish."),
    Setting("server.log_level", "info", _choice("debug", "info", "warning", "error"),
            "Log level of the gateway processes."),
    Setting("identity.spiffe_trust_domains", ("cluster.local",), _text_list,
            "SPIFFE trust domains whose IDs identify agents; others are no identity."),
    Setting("identity.api_key_header", "x-mitrity-api-key", _optional(_header_name),
            "Header carrying the MITRITY API key; null turns the API-key path off."),
    Setting("identity.unknown_agent", "deny", _choice("deny", "allow"),
            "An identity bound to no agent: deny (403), or allow as unbound:<id> (migration only)."),
    Setting("providers", DEFAULT_PROVIDERS, _providers,
            "Provider name -> {upstream: https://...}; replaces the default map when given (a provider left out answers 404)."),
    Setting("upstream.ca_file", None, _optional(_path),
            "Extra trust anchors toward providers (PEM), added to the system store."),
    Setting("upstream.connect_timeout_s", 10.0, _number(0.1, 600),
            "TCP and TLS connect timeout toward a provider."),
    Setting("upstream.read_timeout_s", 600.0, _number(0.1, 3600),
            "The longest silence allowed between bytes of a provider's answer."),
    Setting("upstream.max_response_bytes", 32 * 1024 * 1024, _int(1024, 1024 * 1024 * 1024),
            "Largest non-streamed answer the gateway buffers; larger answers get 502."),
    Setting("policy.file", "config/policy.yaml", _path,
            "Policy bundle file; re-read within 2 s of a change."),
    Setting("policy.control_plane", None, _optional(_control_plane),
            "Control-plane policy source (not available in this version)."),
    Setting("policy.cache_dir", "var/policy", _path,
            "For the control-plane source's last good bundle (not available in this version); unused with policy.file."),
    Setting("dlp.builtin_patterns", True, _bool,
            "Apply the built-in secret and PII catalog."),
    Setting("dlp.response_scan", True, _bool,
            "Scan answers before the agent sees them."),
    Setting("dlp.stream_holdback_bytes", 2048, _int(MIN_HOLDBACK_BYTES, MAX_HOLDBACK_BYTES),
            "Holdback window over streamed text, in bytes."),
    Setting("usage.database", "var/usage.db", _path,
            "SQLite usage store."),
    Setting("admin.bind", "127.0.0.1:9090", _bind,
            "Admin listener (health, readiness); non-loopback needs TLS and a token."),
    Setting("admin.token_env", "MITRITY_ADMIN_TOKEN", _optional(_text),
            "Environment variable holding the admin bearer token; when set, it is required."),
)
BY_KEY = {s.key: s for s in SETTINGS}
# The Config the gunicorn master validated (set by gunicorn.conf.py); workers
# inherit it across the fork, so a worker never re-reads a file that changed
# after the master checked it.
ACTIVE = None
# Section names ("server", "server.tls", ...) that may hold further keys.
SECTIONS = {s.key.rsplit(".", i)[0] for s in SETTINGS for i in range(1, s.key.count(".") + 1)}


class Config:
    """The validated settings, read as ``config["server.bind"]``."""

    def __init__(self, values, source=None):
        self._values = dict(values)
        self.source = source

    def __getitem__(self, key):
        return self._values[key]

    def as_dict(self):
        return dict(self._values)


def _walk(document, prefix, found):
    if not isinstance(document, dict):
        raise ConfigError(prefix or None, "must be a mapping")
    for name, value in document.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        if key in BY_KEY:
            found[key] = value
        elif key in SECTIONS:
            _walk(value if value is not None else {}, key, found)
        else:
            raise ConfigError(key, "unknown configuration key")


def build(document, environ=os.environ, source=None):
    """Validate a parsed YAML document (``None`` means empty) into a Config."""
    found = {}
    _walk(document if document is not None else {}, "", found)
    values = {}
    for setting in SETTINGS:
        raw = found.get(setting.key, setting.default)
        try:
            values[setting.key] = setting.check(raw)
        except ValueError as exc:
            raise ConfigError(setting.key, str(exc)) from None
    if environ.get("WEB_CONCURRENCY"):
        try:
            values["server.workers"] = _int(1, 256)(int(environ["WEB_CONCURRENCY"]))
        except ValueError:
            raise ConfigError("server.workers", "env WEB_CONCURRENCY must be an integer from 1 to 256") from None
    if values["server.workers"] is None:
        values["server.workers"] = 2 * (os.cpu_count() or 1)
    _check_together(values)
    return Config(values, source)


def _check_together(values):
    """Rules that involve more than one key (SPEC section 2 startup refusals)."""
    host, _ = parse_bind(values["server.bind"])
    tls = values["server.tls.enabled"]
    if not tls and not is_loopback(host):
        raise ConfigError("server.tls.enabled", f"TLS is off but server.bind {host} is not a loopback address")
    if tls:
        for key in ("server.tls.cert_file", "server.tls.key_file"):
            if values[key] is None:
                raise ConfigError(key, "required when server.tls.enabled is true")
    if values["server.tls.client_cert"] == "required" and values["server.tls.client_ca_file"] is None:
        raise ConfigError("server.tls.client_ca_file", "required when server.tls.client_cert is required")
    if not tls and values["server.tls.client_cert"] == "required":
        raise ConfigError("server.tls.client_cert", "client certificates need server.tls.enabled")
    admin_host, admin_port = parse_bind(values["admin.bind"])
    if admin_port == parse_bind(values["server.bind"])[1]:
        raise ConfigError("admin.bind", "must use another port than server.bind")
    if not is_loopback(admin_host):
        if not tls:
            raise ConfigError("admin.bind", f"{admin_host} is not loopback, so it needs server.tls.enabled")
        if not values["admin.token_env"]:
            raise ConfigError("admin.token_env", f"admin.bind {admin_host} is not loopback, so a token is required")
    for key in ("server.tls.cert_file", "server.tls.key_file", "server.tls.client_ca_file", "upstream.ca_file"):
        path = values[key]
        if path is not None and (tls or not key.startswith("server.tls")) and not os.path.isfile(path):
            raise ConfigError(key, f"file not found: {path}")


def load(path, environ=os.environ):
    """Read and validate the YAML config at ``path``."""
    try:
        with open(path, "rb") as f:
            document = yaml.safe_load(f)
    except OSError as exc:
        raise ConfigError(None, f"cannot read config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(None, f"config {path} is not valid YAML{where}") from None
    return build(document, environ, source=os.path.abspath(path))


DEFAULT_CONFIG_PATH = "config/gateway.yaml"


def load_from_env(environ=os.environ):
    """The config named by $MITRITY_CONFIG (default config/gateway.yaml)."""
    return load(environ.get("MITRITY_CONFIG", DEFAULT_CONFIG_PATH), environ)


def admin_token(config, environ=os.environ):
    """The admin bearer token from the environment, or None when not set."""
    name = config["admin.token_env"]
    return environ.get(name) or None if name else None


def check_admin_token(config, environ=os.environ):
    """A non-loopback admin listener needs its token variable actually set."""
    host, _ = parse_bind(config["admin.bind"])
    if not is_loopback(host) and admin_token(config, environ) is None:
        raise ConfigError("admin.token_env", f"admin.bind {host} is not loopback, so ${config['admin.token_env']} must be set")
