"""The Helm chart in helm/mitrity-llm-gateway, rendered by the real Helm engine.

``helm_python`` (PyPI ``helm-python-sdk``) binds Helm's own Go SDK, so these
tests render and lint the chart exactly as ``helm template`` / ``helm lint``
would, offline and without a ``helm`` binary. What the chart renders is then
checked with the gateway's own validators (``gateway.config.build``,
``policy_sync.bundle``), and the rendered probe commands are run against a real
gateway started from the rendered config and policy, laid out the way kubelet
projects a directory-mounted ConfigMap.
"""

import os
import shutil
import signal
import subprocess
import sys
import time

import helm_python as helm
import pytest
import yaml

from gateway import config as gateway_config
from policy_sync import bundle
from tests.harness import GUNICORN, PKI, ROOT, free_port

CHART = os.path.join(ROOT, "helm", "mitrity-llm-gateway")
NAME = "mitrity-llm-gateway"
BASE = {"tls": {"existingSecret": "gateway-tls"}}


def render(values=None, base=True):
    merged = _merge(BASE, values or {}) if base else (values or {})
    with helm.Chart.load(CHART) as chart:
        return chart.render(merged, name="gw", namespace="agents")


def manifests(values=None):
    """Rendered objects by (kind, name); every rendered document must parse."""
    objects = {}
    for path, text in render(values).items():
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc is not None:
                objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


def one(objects, kind):
    found = [doc for (k, _), doc in objects.items() if k == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def gateway_yaml(objects):
    return objects[("ConfigMap", "gw-mitrity-llm-gateway-config")]["data"]["gateway.yaml"]


def policy_yaml(objects):
    return objects[("ConfigMap", "gw-mitrity-llm-gateway-policy")]["data"]["policy.yaml"]


def container(objects):
    deployment = one(objects, "Deployment")
    (gateway,) = deployment["spec"]["template"]["spec"]["containers"]
    return gateway


def _merge(base, override):
    result = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _merge(result[key], value)
        else:
            result[key] = value
    return result


def _remap(document, old, new):
    if isinstance(document, dict):
        return {k: _remap(v, old, new) for k, v in document.items()}
    if isinstance(document, list):
        return [_remap(v, old, new) for v in document]
    if isinstance(document, str) and document.startswith(old):
        return new + document[len(old):]
    return document


@pytest.fixture(scope="module")
def default():
    return manifests()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(str(tmp_path_factory.mktemp("pki")))


def test_chart_metadata_and_strict_lint():
    with helm.Chart.load(CHART) as chart:
        assert (chart.name, chart.version) == (NAME, "0.1.0")
        assert chart.metadata["apiVersion"] == "v2"
        assert chart.metadata["appVersion"] == "0.1.0"
    report = helm.lint(CHART, BASE, strict=True)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_renders_the_expected_objects(default):
    kinds = sorted(kind for kind, _ in default)
    assert kinds == ["ConfigMap", "ConfigMap", "Deployment", "PodDisruptionBudget", "Service"]
    service = one(default, "Service")
    assert service["spec"]["ports"] == [{"name": "https", "port": 8443, "targetPort": "https", "protocol": "TCP"}]
    assert service["spec"]["selector"] == one(default, "Deployment")["spec"]["selector"]["matchLabels"]
    pdb = one(default, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == one(default, "Deployment")["spec"]["selector"]
    assert "gw-mitrity-llm-gateway" in render()["mitrity-llm-gateway/templates/NOTES.txt"]


def test_gateway_config_passes_the_gateway_validator(default, tmp_path):
    document = yaml.safe_load(gateway_yaml(default))
    assert document["server"]["bind"] == "0.0.0.0:8443"
    assert document["server"]["workers"] == 2
    assert document["server"]["tls"]["enabled"] is True
    assert document["admin"]["bind"] == "127.0.0.1:9090"

    # As rendered, the only complaint is the certificate that only exists in the pod.
    with pytest.raises(gateway_config.ConfigError) as refused:
        gateway_config.build(document, environ={})
    assert refused.value.key == "server.tls.cert_file"
    assert refused.value.reason == "file not found: /etc/mitrity/tls/tls.crt"

    # With the mounted files present, it validates as a whole.
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir()
    for name in ("tls.crt", "tls.key", "ca.crt"):
        (tls_dir / name).write_text("PEM\n")
    config = gateway_config.build(_remap(document, "/etc/mitrity/tls/", f"{tls_dir}/"), environ={})
    assert config["server.tls.enabled"] is True
    assert config["server.tls.client_ca_file"] == str(tls_dir / "ca.crt")
    assert config["server.workers"] == 2
    assert config["server.graceful_timeout_s"] == 30.0
    assert config["policy.file"] == "/etc/mitrity/policy/policy.yaml"
    assert config["admin.bind"] == "127.0.0.1:9090"


def test_tls_files_come_from_the_mounted_secret(default):
    document = yaml.safe_load(gateway_yaml(default))
    spec = one(default, "Deployment")["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in container(default)["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert mounts["tls"]["mountPath"] == "/etc/mitrity/tls" and mounts["tls"]["readOnly"] is True
    (source,) = volumes["tls"]["projected"]["sources"]
    assert source["secret"]["name"] == "gateway-tls"
    projected = {item["path"] for item in source["secret"]["items"]}
    tls = document["server"]["tls"]
    assert {tls["cert_file"], tls["key_file"], tls["client_ca_file"]} == {
        f"/etc/mitrity/tls/{path}" for path in projected}

    # No client CA configured: ca.crt is not required from the Secret.
    objects = manifests({"config": {"server": {"tls": {"client_ca_file": None}}}})
    assert "client_ca_file" not in yaml.safe_load(gateway_yaml(objects))["server"]["tls"]
    volumes = {v["name"]: v for v in one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    (source,) = volumes["tls"]["projected"]["sources"]
    assert [i["path"] for i in source["secret"]["items"]] == ["tls.crt", "tls.key"]

    # The agents' CA from a ConfigMap (e.g. a SPIRE trust bundle).
    objects = manifests({"tls": {"clientCA": {"existingConfigMap": "spire-bundle", "key": "bundle.crt"}}})
    volumes = {v["name"]: v for v in one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    sources = volumes["tls"]["projected"]["sources"]
    assert sources[1] == {"configMap": {"name": "spire-bundle", "items": [{"key": "bundle.crt", "path": "ca.crt"}]}}


def test_policy_bundle_is_valid_and_mounted_as_a_directory(default):
    document = bundle.validate(yaml.safe_load(policy_yaml(default)))
    assert document["agents"] == []  # fail closed until agents are added
    bundle.prepare(policy_yaml(default).encode())  # compiles as a worker would

    config = yaml.safe_load(gateway_yaml(default))
    policy_file = config["policy"]["file"]
    mounts = {m["name"]: m for m in container(default)["volumeMounts"]}
    assert mounts["policy"]["mountPath"] == os.path.dirname(policy_file)
    assert "subPath" not in mounts["policy"]  # a subPath mount never sees kubelet's updates
    volumes = {v["name"]: v for v in one(default, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["policy"]["configMap"]["name"] == "gw-mitrity-llm-gateway-policy"
    assert volumes["policy"]["configMap"]["items"] == [
        {"key": os.path.basename(policy_file), "path": os.path.basename(policy_file)}]


def test_a_real_policy_renders_to_the_same_bundle():
    with open(os.path.join(ROOT, "config", "policy.yaml"), "rb") as f:
        raw = f.read()
    expected = bundle.validate(bundle.parse(raw))
    as_map = policy_yaml(manifests({"policy": {"bundle": yaml.safe_load(raw)}}))
    as_text = policy_yaml(manifests({"policy": {"bundleYaml": raw.decode()}}))
    for text in (as_map, as_text):
        assert bundle.prepare(text.encode())[0] == expected
    # An external ConfigMap replaces the chart's own.
    objects = manifests({"policy": {"existingConfigMap": "team-policy"}})
    assert ("ConfigMap", "gw-mitrity-llm-gateway-policy") not in objects
    volumes = {v["name"]: v for v in one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["policy"]["configMap"]["name"] == "team-policy"


def test_policy_file_outside_the_mounted_directory_is_refused():
    with pytest.raises(helm.HelmRenderError, match="config.policy.file must be /etc/mitrity/policy/policy.yaml"):
        render({"config": {"policy": {"file": "config/policy.yaml"}}})


def test_deployment_runs_gunicorn_with_the_rendered_config(default):
    gateway = container(default)
    assert gateway["command"] == ["gunicorn", "-c", "gunicorn.conf.py", "gateway.wsgi"]
    assert gateway["workingDir"] == "/app"
    env = {e["name"]: e.get("value") for e in gateway["env"]}
    assert env["MITRITY_CONFIG"] == "/etc/mitrity/config/gateway.yaml"
    assert "WEB_CONCURRENCY" not in env  # it would override server.workers
    mounts = {m["name"]: m for m in gateway["volumeMounts"]}
    assert mounts["config"]["mountPath"] == os.path.dirname(env["MITRITY_CONFIG"])
    assert gateway["ports"] == [{"name": "https", "containerPort": 8443, "protocol": "TCP"}]
    assert yaml.safe_load(gateway_yaml(manifests({"workers": 5})))["server"]["workers"] == 5


def test_config_changes_roll_pods_but_policy_changes_do_not(default):
    def annotations(objects):
        return one(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]

    checksum = annotations(default)["checksum/config"]
    assert len(checksum) == 64
    assert annotations(manifests({"workers": 3}))["checksum/config"] != checksum
    assert annotations(manifests({"config": {"server": {"log_level": "debug"}}}))["checksum/config"] != checksum
    changed_policy = manifests({"policy": {"bundle": {"revision": "other.2"}}})
    assert policy_yaml(changed_policy) != policy_yaml(default)
    assert annotations(changed_policy) == annotations(default)
    assert not [k for k in annotations(default) if "policy" in k]


def test_pod_is_locked_down_with_writable_scratch(default):
    spec = one(default, "Deployment")["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["automountServiceAccountToken"] is False
    security = container(default)["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    mounts = {m["name"]: m["mountPath"] for m in container(default)["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert mounts["shm"] == "/dev/shm"
    assert volumes["shm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "64Mi"}
    assert mounts["var"] == "/app/var" and "emptyDir" in volumes["var"]
    assert mounts["tmp"] == "/tmp" and "emptyDir" in volumes["tmp"]


def test_termination_grace_exceeds_the_gateways_graceful_timeout(default):
    spec = one(default, "Deployment")["spec"]["template"]["spec"]
    graceful = yaml.safe_load(gateway_yaml(default))["server"]["graceful_timeout_s"]
    assert spec["terminationGracePeriodSeconds"] > graceful + 5  # after the 5 s preStop pause
    objects = manifests({"config": {"server": {"graceful_timeout_s": 120}}})
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 125
    with pytest.raises(helm.HelmRenderError, match="terminationGracePeriodSeconds"):
        render({"terminationGracePeriodSeconds": 30})


def test_probes_hit_healthz_and_readyz_on_the_loopback_admin_listener(default):
    gateway = container(default)
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        command = gateway[probe]["exec"]["command"]
        assert command[:2] == ["python", "-c"]
        assert f"'http://127.0.0.1:9090{path}'" in command[2]
        compile(command[2], probe, "exec")

    objects = manifests({"config": {"admin": {"bind": "127.0.0.1:9191"}}})
    assert "'http://127.0.0.1:9191/readyz'" in container(objects)["readinessProbe"]["exec"]["command"][2]
    # A non-loopback admin listener is TLS: the probes follow, and the port is declared.
    objects = manifests({"config": {"admin": {"bind": "0.0.0.0:9090"}}})
    assert "'https://127.0.0.1:9090/readyz'" in container(objects)["readinessProbe"]["exec"]["command"][2]
    assert {"name": "admin", "containerPort": 9090, "protocol": "TCP"} in container(objects)["ports"]


@pytest.mark.parametrize("values", [
    {},
    {"config": {"server": {"bind": "127.0.0.1:8443", "tls": {"enabled": False}}}},
    {"config": {"admin": {"bind": "0.0.0.0:9090"}}},
    {"config": {"server": {"bind": "[::]:8443"}, "admin": {"bind": "[::1]:9090"}}},
])
def test_no_plaintext_listener_off_loopback(values):
    document = yaml.safe_load(gateway_yaml(manifests(values)))
    tls = document["server"].get("tls", {}).get("enabled", True)
    for key in ("server", "admin"):
        host, _ = gateway_config.parse_bind(document[key]["bind"])
        assert tls or gateway_config.is_loopback(host), f"{key}.bind {host} would be plaintext"


@pytest.mark.parametrize("values, message", [
    ({"config": {"server": {"tls": {"enabled": False}}}}, "no plaintext listener on the network"),
    ({"config": {"server": {"bind": "127.0.0.1:8443", "tls": {"enabled": False}},
                 "admin": {"bind": "0.0.0.0:9090"}}}, "needs config.server.tls.enabled"),
    ({"config": {"admin": {"bind": "127.0.0.1:8443"}}}, "another port"),
])
def test_refuses_what_the_gateway_would_refuse(values, message):
    with pytest.raises(helm.HelmRenderError, match=message):
        render(values)


def test_the_tls_secret_is_required():
    with pytest.raises(helm.HelmRenderError, match="tls.existingSecret is required"):
        render({}, base=False)


def test_network_policy_is_optional():
    objects = manifests({"networkPolicy": {"enabled": True, "ingressFrom": [
        {"namespaceSelector": {"matchLabels": {"mitrity.io/agents": "true"}}}]},
        "config": {"providers": {"openai": {"upstream": "https://llm-proxy.internal:8443/openai"}}}})
    policy = one(objects, "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = policy["ingress"]
    assert ingress["ports"] == [{"port": "https", "protocol": "TCP"}]
    assert ingress["from"][0]["namespaceSelector"]["matchLabels"] == {"mitrity.io/agents": "true"}
    dns, providers = policy["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert sorted(p["port"] for p in providers["ports"]) == [443, 8443]


def _wait(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_rendered_probes_against_the_real_gateway_and_a_kubelet_style_policy_swap(tmp_path, pki):
    """Start the gateway from the rendered config; run the rendered probe commands.

    The policy directory is laid out as kubelet projects a ConfigMap volume
    (``policy.yaml -> ..data/policy.yaml``, ``..data -> ..<timestamp>``) and
    updated the way kubelet does it: a new timestamped directory, then an atomic
    rename of the ``..data`` symlink.
    """
    port, admin_port = free_port(), free_port()
    objects = manifests({"workers": 1, "config": {
        "server": {"bind": f"127.0.0.1:{port}"}, "admin": {"bind": f"127.0.0.1:{admin_port}"}}})

    etc = tmp_path / "etc" / "mitrity"
    tls_dir = etc / "tls"
    tls_dir.mkdir(parents=True)
    shutil.copy(pki.server.cert_path, tls_dir / "tls.crt")
    shutil.copy(pki.server.key_path, tls_dir / "tls.key")
    shutil.copy(pki.ca.cert_path, tls_dir / "ca.crt")

    def project_policy(text, stamp):
        policy_dir = etc / "policy"
        policy_dir.mkdir(exist_ok=True)
        (policy_dir / stamp).mkdir()
        (policy_dir / stamp / "policy.yaml").write_text(text)
        os.symlink(stamp, policy_dir / "..data_tmp")
        os.replace(policy_dir / "..data_tmp", policy_dir / "..data")
        if not (policy_dir / "policy.yaml").is_symlink():
            os.symlink("..data/policy.yaml", policy_dir / "policy.yaml")

    project_policy("revision: 1\nagents: not-a-list\n", "..2026_12_04_00_00_00.000000001")

    document = _remap(yaml.safe_load(gateway_yaml(objects)), "/etc/mitrity/", f"{etc}/")
    document["policy"]["cache_dir"] = str(tmp_path / "var" / "policy")
    document["usage"] = {"database": str(tmp_path / "var" / "usage.db")}
    config_path = tmp_path / "gateway.yaml"
    config_path.write_text(yaml.safe_dump(document))

    token = "probe-token-3f9a"
    env = {k: v for k, v in os.environ.items() if k not in ("WEB_CONCURRENCY", "MITRITY_POLICY_SEGMENT")}
    env.update({e["name"]: e["value"] for e in container(objects)["env"]})
    env.update(MITRITY_CONFIG=str(config_path), MITRITY_ADMIN_TOKEN=token)
    probes = {name: [sys.executable] + container(objects)[name]["exec"]["command"][1:]
              for name in ("startupProbe", "livenessProbe", "readinessProbe")}

    def probe(name, environ=env):
        return subprocess.run(probes[name], env=environ, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=10).returncode

    log = open(tmp_path / "gateway.log", "wb")
    process = subprocess.Popen([GUNICORN, "-c", "gunicorn.conf.py", "gateway.wsgi"], cwd=ROOT, env=env,
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        assert _wait(lambda: process.poll() is None and probe("startupProbe") == 0, 15), (
            (tmp_path / "gateway.log").read_text()[-3000:])
        assert probe("livenessProbe") == 0
        # The first bundle is invalid: alive, but not ready.
        assert probe("readinessProbe") != 0
        # The probes send the admin token from the container's environment.
        no_token = {k: v for k, v in env.items() if k != "MITRITY_ADMIN_TOKEN"}
        assert probe("livenessProbe", no_token) != 0

        project_policy(policy_yaml(objects), "..2026_12_04_00_01_00.000000002")
        assert _wait(lambda: probe("readinessProbe") == 0, 5), (tmp_path / "gateway.log").read_text()[-3000:]
        assert "policy revision chart-default.1 published" in (tmp_path / "gateway.log").read_text()
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
        log.close()
