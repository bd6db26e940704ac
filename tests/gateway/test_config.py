"""Tests for gateway.config: every setting declared once, and every startup refusal of SPEC section 2."""

import os
import re

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from gateway import config
from gateway.config import SETTINGS, ConfigError, build, check_admin_token, load

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def tls(tmp_path):
    """Existing (empty) certificate files: config only checks that they exist."""
    paths = {}
    for name in ("tls.crt", "tls.key", "ca.crt", "upstream-ca.crt"):
        path = tmp_path / name
        path.write_text("placeholder\n")
        paths[name] = str(path)
    return paths


def with_tls(tls, **sections):
    """A document with TLS certificate files, merged with ``sections``."""
    document = {"server": {"tls": {"cert_file": tls["tls.crt"], "key_file": tls["tls.key"]}}}
    for name, value in sections.items():
        if name == "server":
            server = dict(value)
            server_tls = {**document["server"]["tls"], **server.pop("tls", {})}
            document["server"] = {**server, "tls": server_tls}
        else:
            document[name] = value
    return document


def plaintext(bind="127.0.0.1:8443", **sections):
    """A document with TLS off on a (by default) loopback listener."""
    server = {"bind": bind, "tls": {"enabled": False}}
    server.update(sections.pop("server", {}))
    return {"server": server, **sections}


def refused(document, environ=None):
    with pytest.raises(ConfigError) as info:
        build(document, environ={} if environ is None else environ)
    return info.value


# -- defaults ---------------------------------------------------------------------------------------

def test_defaults_with_only_the_required_certificate_files(tls):
    cfg = build(with_tls(tls), environ={})
    assert cfg["server.bind"] == "0.0.0.0:8443"
    assert cfg["server.workers"] == 2 * (os.cpu_count() or 1)
    assert cfg["server.tls.enabled"] is True
    assert cfg["server.tls.cert_file"] == tls["tls.crt"]
    assert cfg["server.tls.key_file"] == tls["tls.key"]
    assert cfg["server.tls.client_ca_file"] is None
    assert cfg["server.tls.client_cert"] == "optional"
    assert cfg["server.max_request_bytes"] == 10485760
    assert cfg["identity.spiffe_trust_domains"] == ("cluster.local",)
    assert cfg["identity.api_key_header"] == "x-mitrity-api-key"
    assert cfg["identity.unknown_agent"] == "deny"
    assert cfg["providers"] == {"anthropic": "https://api.anthropic.com", "openai": "https://api.openai.com"}
    assert cfg["upstream.ca_file"] is None
    assert cfg["upstream.connect_timeout_s"] == 10
    assert cfg["upstream.read_timeout_s"] == 600
    assert cfg["policy.file"] == os.path.abspath("config/policy.yaml")
    assert cfg["policy.control_plane"] is None
    assert cfg["policy.cache_dir"] == os.path.abspath("var/policy")
    assert cfg["dlp.builtin_patterns"] is True
    assert cfg["dlp.response_scan"] is True
    assert cfg["dlp.stream_holdback_bytes"] == 2048
    assert cfg["usage.database"] == os.path.abspath("var/usage.db")
    assert cfg["admin.bind"] == "127.0.0.1:9090"
    assert cfg["admin.token_env"] == "MITRITY_ADMIN_TOKEN"


def test_every_setting_has_a_value_and_a_doc(tls):
    values = build(with_tls(tls), environ={}).as_dict()
    assert set(values) == {s.key for s in SETTINGS}
    assert len({s.key for s in SETTINGS}) == len(SETTINGS)
    assert all(s.doc.strip() for s in SETTINGS)


@pytest.mark.parametrize("document", [None, {}])
def test_empty_document_is_refused_because_tls_is_on_by_default_and_needs_a_certificate(document):
    # Secure by default: TLS is on, and a TLS listener without a certificate cannot start.
    assert refused(document).key == "server.tls.cert_file"


def test_empty_sections_are_allowed(tls):
    document = with_tls(tls, identity=None, dlp=None, upstream={})
    assert build(document, environ={})["identity.unknown_agent"] == "deny"


def test_plaintext_on_loopback_needs_no_certificate_files():
    cfg = build(plaintext(), environ={})
    assert cfg["server.tls.enabled"] is False
    assert cfg["server.tls.cert_file"] is None


def test_config_source_is_recorded(tls, tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(with_tls(tls)))
    cfg = load(str(path), environ={})
    assert cfg.source == str(path)
    assert cfg["server.tls.cert_file"] == tls["tls.crt"]


# -- unknown keys -----------------------------------------------------------------------------------

@pytest.mark.parametrize("document, key", [
    ({"bogus": 1}, "bogus"),
    ({"server": {"bogus": 1}}, "server.bogus"),
    ({"server": {"tls": {"bogus": 1}}}, "server.tls.bogus"),
    ({"identity": {"spiffe_trust_domain": ["x"]}}, "identity.spiffe_trust_domain"),
    ({"policy": {"files": "p.yaml"}}, "policy.files"),
    ({"admin": {"token": "secret"}}, "admin.token"),
    ({"Server": {}}, "Server"),
])
def test_unknown_key_is_refused_by_name(document, key):
    error = refused(document)
    assert error.key == key
    assert "unknown" in str(error)
    assert str(error).startswith(key + ":")


@given(st.text(min_size=1, max_size=20).filter(lambda name: name not in config.SECTIONS | set(config.BY_KEY)))
def test_any_unknown_top_level_key_is_refused(name):
    assert refused({name: 1}).key == name


@pytest.mark.parametrize("document, key", [
    ([], None),
    ("server", None),
    ({"server": 5}, "server"),
    ({"server": {"tls": ["enabled"]}}, "server.tls"),
])
def test_a_section_must_be_a_mapping(document, key):
    error = refused(document)
    assert error.key == key
    assert "mapping" in str(error)


# -- invalid values ---------------------------------------------------------------------------------

@pytest.mark.parametrize("key, value", [
    ("server.bind", "nope"),
    ("server.bind", "0.0.0.0:0"),
    ("server.bind", "0.0.0.0:65536"),
    ("server.bind", ":8443"),
    ("server.bind", 8443),
    ("server.workers", "four"),
    ("server.workers", 0),
    ("server.workers", 257),
    ("server.workers", True),
    ("server.workers", 2.5),
    ("server.worker_connections", 0),
    ("server.tls.enabled", "yes"),
    ("server.tls.enabled", 1),
    ("server.tls.client_cert", "sometimes"),
    ("server.tls.client_cert", True),
    ("server.tls.cert_file", ""),
    ("server.tls.cert_file", 5),
    ("server.tls.handshake_timeout_s", 0),
    ("server.max_request_bytes", 1023),
    ("server.max_request_bytes", "10MB"),
    ("server.header_timeout_s", "10s"),
    ("server.log_level", "verbose"),
    ("identity.spiffe_trust_domains", "cluster.local"),
    ("identity.spiffe_trust_domains", [""]),
    ("identity.spiffe_trust_domains", [1]),
    ("identity.api_key_header", "x-api-key"),
    ("identity.api_key_header", "Authorization"),
    ("identity.api_key_header", "bad header!"),
    ("identity.api_key_header", ""),
    ("identity.unknown_agent", "maybe"),
    ("identity.unknown_agent", None),
    ("providers", {}),
    ("providers", ["anthropic"]),
    ("upstream.connect_timeout_s", -1),
    ("upstream.read_timeout_s", 0),
    ("upstream.read_timeout_s", "600"),
    ("upstream.max_response_bytes", 10),
    ("policy.file", None),
    ("policy.file", ""),
    ("policy.cache_dir", 3),
    ("dlp.builtin_patterns", "true"),
    ("dlp.response_scan", None),
    ("dlp.stream_holdback_bytes", 255),
    ("dlp.stream_holdback_bytes", 1048577),
    ("dlp.stream_holdback_bytes", 2048.0),
    ("usage.database", ["a"]),
    ("admin.bind", "localhost"),
    ("admin.token_env", ""),
])
def test_invalid_value_is_refused_by_key(tls, key, value):
    section, _, name = key.rpartition(".")
    document = with_tls(tls)
    node = document
    for part in section.split(".") if section else ():
        node = node.setdefault(part, {})
    node[name] = value
    error = refused(document)
    assert error.key == key
    assert str(error).startswith(key + ": ")
    assert error.reason


@pytest.mark.parametrize("value", [256, 1048576])
def test_holdback_bounds_are_inclusive(tls, value):
    cfg = build(with_tls(tls, dlp={"stream_holdback_bytes": value}), environ={})
    assert cfg["dlp.stream_holdback_bytes"] == value


def test_api_key_header_is_lower_cased_and_may_be_turned_off(tls):
    assert build(with_tls(tls, identity={"api_key_header": "X-Agent-Key"}), environ={})[
        "identity.api_key_header"] == "x-agent-key"
    assert build(with_tls(tls, identity={"api_key_header": None}), environ={})["identity.api_key_header"] is None


def test_numbers_become_floats_where_seconds_are_meant(tls):
    cfg = build(with_tls(tls, upstream={"connect_timeout_s": 3}), environ={})
    assert cfg["upstream.connect_timeout_s"] == 3.0
    assert isinstance(cfg["upstream.connect_timeout_s"], float)


# -- providers --------------------------------------------------------------------------------------

def test_providers_replace_the_default_map(tls):
    cfg = build(with_tls(tls, providers={"openai": {"upstream": "https://proxy.example:8443/openai/"}}), environ={})
    assert cfg["providers"] == {"openai": "https://proxy.example:8443/openai"}


@pytest.mark.parametrize("upstream", [
    "http://api.anthropic.com",
    "HTTP://api.anthropic.com",
    "api.anthropic.com",
    "ftp://api.anthropic.com",
    "https://",
    "https://api.anthropic.com/?a=b",
    "https://user@api.anthropic.com",
])
def test_provider_upstream_must_be_https(tls, upstream):
    error = refused(with_tls(tls, providers={"anthropic": {"upstream": upstream}}))
    assert error.key == "providers"
    assert "anthropic.upstream" in str(error)
    assert "https://" in str(error)


def test_http_provider_upstream_is_refused_even_with_plaintext_listener():
    error = refused(plaintext(providers={"openai": {"upstream": "http://127.0.0.1:9999"}}))
    assert error.key == "providers"
    assert "https://" in str(error)


def test_unknown_provider_name_is_refused(tls):
    error = refused(with_tls(tls, providers={"gemini": {"upstream": "https://generativelanguage.googleapis.com"}}))
    assert error.key == "providers"
    assert "gemini" in str(error)


@pytest.mark.parametrize("entry", [
    "https://api.openai.com",
    {},
    {"upstream": "https://api.openai.com", "timeout": 3},
    {"url": "https://api.openai.com"},
])
def test_provider_entry_must_be_exactly_an_upstream(tls, entry):
    assert refused(with_tls(tls, providers={"openai": entry})).key == "providers"


# -- TLS and loopback -------------------------------------------------------------------------------

@pytest.mark.parametrize("bind", ["0.0.0.0:8443", "10.1.2.3:8443", "[::]:8443", "gateway.example:8443",
                                  "localhost.example:8443"])
def test_tls_off_on_a_non_loopback_listener_is_refused(bind):
    error = refused(plaintext(bind=bind))
    assert error.key in ("server.tls.enabled", "server.bind")
    assert "loopback" in str(error)
    assert "server.bind" in str(error)


@pytest.mark.parametrize("bind", ["127.0.0.1:8443", "127.0.0.2:8443", "[::1]:8443", "localhost:8443"])
def test_tls_off_on_a_loopback_listener_is_accepted(bind):
    assert build(plaintext(bind=bind), environ={})["server.bind"] == bind


@pytest.mark.parametrize("missing", ["cert_file", "key_file"])
def test_tls_on_needs_certificate_and_key(tls, missing):
    document = with_tls(tls)
    del document["server"]["tls"][missing]
    error = refused(document)
    assert error.key == "server.tls." + missing
    assert "required" in str(error)


@pytest.mark.parametrize("key", ["cert_file", "key_file", "client_ca_file"])
def test_missing_certificate_file_is_refused(tls, tmp_path, key):
    absent = str(tmp_path / "absent.pem")
    error = refused(with_tls(tls, server={"tls": {key: absent}}))
    assert error.key == "server.tls." + key
    assert absent in str(error)


def test_missing_upstream_ca_file_is_refused_even_with_tls_off(tmp_path):
    absent = str(tmp_path / "absent.pem")
    error = refused(plaintext(upstream={"ca_file": absent}))
    assert error.key == "upstream.ca_file"
    assert absent in str(error)


def test_existing_upstream_ca_file_is_accepted(tls):
    assert build(with_tls(tls, upstream={"ca_file": tls["upstream-ca.crt"]}), environ={})[
        "upstream.ca_file"] == tls["upstream-ca.crt"]


def test_directory_is_not_a_certificate_file(tls, tmp_path):
    assert refused(with_tls(tls, server={"tls": {"cert_file": str(tmp_path)}})).key == "server.tls.cert_file"


def test_required_client_cert_needs_a_client_ca(tls):
    error = refused(with_tls(tls, server={"tls": {"client_cert": "required"}}))
    assert error.key == "server.tls.client_ca_file"
    cfg = build(with_tls(tls, server={"tls": {"client_cert": "required", "client_ca_file": tls["ca.crt"]}}),
                environ={})
    assert cfg["server.tls.client_cert"] == "required"
    assert cfg["server.tls.client_ca_file"] == tls["ca.crt"]


def test_required_client_cert_needs_tls(tls):
    document = plaintext(server={"tls": {"enabled": False, "client_cert": "required",
                                        "client_ca_file": tls["ca.crt"]}})
    assert refused(document).key == "server.tls.client_cert"


# -- admin listener ---------------------------------------------------------------------------------

def test_non_loopback_admin_without_tls_is_refused():
    error = refused(plaintext(admin={"bind": "0.0.0.0:9090"}))
    assert error.key == "admin.bind"
    assert "loopback" in str(error)


def test_non_loopback_admin_without_token_env_is_refused(tls):
    error = refused(with_tls(tls, admin={"bind": "0.0.0.0:9090", "token_env": None}))
    assert error.key == "admin.token_env"


def test_non_loopback_admin_with_tls_and_token_env_is_accepted(tls):
    cfg = build(with_tls(tls, admin={"bind": "0.0.0.0:9090", "token_env": "ADMIN_TOKEN"}), environ={})
    assert cfg["admin.bind"] == "0.0.0.0:9090"
    assert cfg["admin.token_env"] == "ADMIN_TOKEN"


def test_admin_must_not_share_the_data_plane_port(tls):
    assert refused(with_tls(tls, admin={"bind": "127.0.0.1:8443"})).key == "admin.bind"


@pytest.mark.parametrize("bind", ["127.0.0.1:9090", "[::1]:9090", "localhost:9090"])
def test_loopback_admin_needs_no_token(bind):
    cfg = build(plaintext(admin={"bind": bind, "token_env": None}), environ={})
    assert check_admin_token(cfg, environ={}) is None
    assert config.admin_token(cfg, environ={}) is None


def test_check_admin_token_requires_the_variable_for_a_non_loopback_admin(tls):
    cfg = build(with_tls(tls, admin={"bind": "0.0.0.0:9090"}), environ={})
    for environ in ({}, {"MITRITY_ADMIN_TOKEN": ""}, {"OTHER": "x"}):
        with pytest.raises(ConfigError) as info:
            check_admin_token(cfg, environ=environ)
        assert info.value.key == "admin.token_env"
        assert "MITRITY_ADMIN_TOKEN" in str(info.value)
    check_admin_token(cfg, environ={"MITRITY_ADMIN_TOKEN": "s3cret"})
    assert config.admin_token(cfg, environ={"MITRITY_ADMIN_TOKEN": "s3cret"}) == "s3cret"


def test_check_admin_token_reads_the_configured_variable(tls):
    cfg = build(with_tls(tls, admin={"bind": "10.0.0.5:9090", "token_env": "MY_ADMIN"}), environ={})
    with pytest.raises(ConfigError, match="MY_ADMIN"):
        check_admin_token(cfg, environ={"MITRITY_ADMIN_TOKEN": "wrong-variable"})
    check_admin_token(cfg, environ={"MY_ADMIN": "t"})


def test_admin_token_on_loopback_is_read_when_set():
    cfg = build(plaintext(), environ={})
    assert config.admin_token(cfg, environ={"MITRITY_ADMIN_TOKEN": "t"}) == "t"
    assert config.admin_token(cfg, environ={}) is None


# -- workers ----------------------------------------------------------------------------------------

def test_default_workers_is_two_per_cpu():
    assert build(plaintext(), environ={})["server.workers"] == 2 * (os.cpu_count() or 1)


def test_server_workers_is_used():
    assert build(plaintext(server={"workers": 3}), environ={})["server.workers"] == 3


@pytest.mark.parametrize("document", [plaintext(server={"workers": 3}), plaintext()])
def test_web_concurrency_overrides_server_workers(document):
    assert build(document, environ={"WEB_CONCURRENCY": "7"})["server.workers"] == 7


def test_empty_web_concurrency_is_ignored():
    assert build(plaintext(server={"workers": 3}), environ={"WEB_CONCURRENCY": ""})["server.workers"] == 3


@pytest.mark.parametrize("value", ["abc", "0", "257", "-1", "2.5"])
def test_invalid_web_concurrency_is_refused(value):
    error = refused(plaintext(server={"workers": 3}), environ={"WEB_CONCURRENCY": value})
    assert error.key == "server.workers"
    assert "WEB_CONCURRENCY" in str(error)


# -- paths ------------------------------------------------------------------------------------------

def test_relative_paths_are_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "certs").mkdir()
    for name in ("tls.crt", "tls.key", "ca.crt", "up.crt"):
        (tmp_path / "certs" / name).write_text("x")
    document = {
        "server": {"tls": {"cert_file": "certs/tls.crt", "key_file": "certs/tls.key",
                           "client_ca_file": "./certs/ca.crt"}},
        "upstream": {"ca_file": "certs/../certs/up.crt"},
        "policy": {"file": "policy.yaml", "cache_dir": "cache"},
        "usage": {"database": "usage.db"},
    }
    cfg = build(document, environ={})
    assert cfg["server.tls.cert_file"] == str(tmp_path / "certs" / "tls.crt")
    assert cfg["server.tls.key_file"] == str(tmp_path / "certs" / "tls.key")
    assert cfg["server.tls.client_ca_file"] == str(tmp_path / "certs" / "ca.crt")
    assert cfg["upstream.ca_file"] == str(tmp_path / "certs" / "up.crt")
    assert cfg["policy.file"] == str(tmp_path / "policy.yaml")
    assert cfg["policy.cache_dir"] == str(tmp_path / "cache")
    assert cfg["usage.database"] == str(tmp_path / "usage.db")
    for key in ("server.tls.cert_file", "policy.file", "usage.database"):
        assert os.path.isabs(cfg[key])


# -- policy source ----------------------------------------------------------------------------------

def test_control_plane_is_refused_with_a_clear_reason():
    document = plaintext(policy={"control_plane": {"url": "https://control.example", "api_key_env": "K"}})
    error = refused(document)
    assert error.key == "policy.control_plane"
    assert "not available" in str(error)
    assert "policy.file" in str(error)


def test_null_control_plane_is_accepted():
    assert build(plaintext(policy={"control_plane": None}), environ={})["policy.control_plane"] is None


# -- files ------------------------------------------------------------------------------------------

def test_invalid_yaml_file_names_the_line(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text("server:\n  bind: x\n  workers: 2\n tls: 3\n")
    with pytest.raises(ConfigError) as info:
        load(str(path), environ={})
    assert "not valid YAML" in str(info.value)
    assert "line 4" in str(info.value)
    assert str(path) in str(info.value)


def test_load_of_a_missing_file_is_a_config_error(tmp_path):
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError) as info:
        load(str(path), environ={})
    assert str(path) in str(info.value)
    assert "cannot read" in str(info.value)


def test_load_validates_the_document(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text("server:\n  tls:\n    bogus: 1\n")
    with pytest.raises(ConfigError) as info:
        load(str(path), environ={})
    assert info.value.key == "server.tls.bogus"


def test_load_of_an_empty_file_refuses_like_an_empty_document(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text("")
    with pytest.raises(ConfigError) as info:
        load(str(path), environ={})
    assert info.value.key == "server.tls.cert_file"


def test_load_from_env_uses_mitrity_config(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(plaintext(server={"workers": 5})))
    cfg = config.load_from_env({"MITRITY_CONFIG": str(path)})
    assert cfg["server.workers"] == 5
    assert cfg.source == str(path)


def test_bundled_example_config_is_valid_once_its_certificates_exist(tmp_path, monkeypatch):
    # config/gateway.yaml names the development certificates `make run` creates under var/certs.
    path = os.path.join(ROOT, "config", "gateway.yaml")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "var" / "certs").mkdir(parents=True)
    for name in ("server.crt", "server.key", "ca.crt"):
        (tmp_path / "var" / "certs" / name).write_text("x")
    cfg = load(path, environ={})
    assert cfg["server.bind"] == "127.0.0.1:8443"
    assert cfg["server.tls.cert_file"] == str(tmp_path / "var" / "certs" / "server.crt")
    assert cfg["policy.file"] == str(tmp_path / "var" / "policy.yaml")


# -- docs -------------------------------------------------------------------------------------------

def test_configuration_doc_mentions_every_key():
    path = os.path.join(ROOT, "docs", "configuration.md")
    if not os.path.exists(path):
        pytest.skip("docs/configuration.md does not exist yet; it must list every key of gateway.config.SETTINGS")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    missing = [s.key for s in SETTINGS
               if not re.search(r"(?<![\w.])" + re.escape(s.key) + r"(?![\w.])", text)]
    assert not missing, f"docs/configuration.md does not mention: {', '.join(missing)}"
