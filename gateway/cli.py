"""``mitrity-llm-gateway``: certificates, key hashing, and checks without a server.

    mitrity-llm-gateway ca --dir DIR
    mitrity-llm-gateway server-cert --dir DIR --host HOST [--host HOST ...]
    mitrity-llm-gateway client-cert --dir DIR --spiffe-id spiffe://td/ns/NS/sa/SA
    mitrity-llm-gateway hash-key            (reads the key from stdin)
    mitrity-llm-gateway check-config [FILE]
    mitrity-llm-gateway check-policy FILE
    mitrity-llm-gateway dev-setup [--dir var]
    mitrity-llm-gateway config-keys         (the settings table, as Markdown)
    mitrity-llm-gateway dlp-patterns        (the built-in DLP catalog)
"""

import argparse
import os
import secrets
import sys

import yaml

from . import certs
from . import config as gateway_config

DEV_SPIFFE_ID = "spiffe://cluster.local/ns/dev/sa/dev-agent"


def _ca(directory):
    return certs.Issued(os.path.join(directory, "ca.crt"), os.path.join(directory, "ca.key"))


def cmd_ca(args):
    issued = certs.create_ca(args.dir, overwrite=args.overwrite)
    print(f"CA: {issued.cert_path} (key {issued.key_path})")


def cmd_server_cert(args):
    issued = certs.issue_server_cert(_ca(args.dir), args.dir, args.host, overwrite=args.overwrite)
    print(f"server certificate: {issued.cert_path} (key {issued.key_path})")


def cmd_client_cert(args):
    issued = certs.issue_client_cert(_ca(args.dir), args.dir, args.spiffe_id, overwrite=args.overwrite)
    print(f"client certificate for {args.spiffe_id}: {issued.cert_path} (key {issued.key_path})")


def cmd_hash_key(args):
    key = sys.stdin.readline().rstrip("\r\n")
    if not key:
        raise SystemExit("hash-key: give the API key on standard input")
    print(certs.hash_api_key(key))


def cmd_check_config(args):
    config = gateway_config.load(args.file)
    gateway_config.check_admin_token(config)
    print(f"config {args.file}: ok")


def cmd_check_policy(args):
    from policy_sync import bundle
    try:
        with open(args.file, "rb") as f:
            document, payload = bundle.prepare(f.read(bundle.MAX_BUNDLE_BYTES + 1))
    except OSError as exc:
        raise SystemExit(f"policy {args.file}: cannot read: {exc.strerror}")
    except ValueError as exc:
        raise SystemExit(f"policy {args.file}: invalid: {exc}")
    print(f"policy {args.file}: ok, revision {document['revision']}, {len(document['agents'])} agents, "
          f"{len(payload)} bytes published")


def cmd_dev_setup(args):
    """Development certificates, an API key and a policy that binds both."""
    cert_dir = os.path.join(args.dir, "certs")
    if not os.path.exists(os.path.join(cert_dir, "ca.crt")):
        ca = certs.create_ca(cert_dir)
        certs.issue_server_cert(ca, cert_dir, ["localhost", "127.0.0.1", "::1"])
        certs.issue_client_cert(ca, cert_dir, DEV_SPIFFE_ID, basename="dev-agent")
        print(f"created development certificates in {cert_dir}")
    key_file = os.path.join(args.dir, "dev-api-key")
    if not os.path.exists(key_file):
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("mtr_dev_" + secrets.token_urlsafe(24) + "\n")
        print(f"created a development API key in {key_file}")
    policy_file = os.path.join(args.dir, "policy.yaml")
    if not os.path.exists(policy_file):
        with open(key_file) as f:
            digest = certs.hash_api_key(f.read().strip())
        with open(args.policy_template) as f:
            template = f.read()
        document = yaml.safe_load(template)
        placeholder = document["agents"][0]["api_key_sha256"][0]
        with open(policy_file, "w") as f:
            f.write(template.replace(placeholder, digest))
        print(f"created {policy_file} from {args.policy_template}")


def cmd_config_keys(args):
    print("| key | default | meaning |\n|---|---|---|")
    for setting in gateway_config.SETTINGS:
        default = setting.default
        if isinstance(default, tuple):
            default = list(default)
        if isinstance(default, dict):
            default = "anthropic, openai (public endpoints)"
        print(f"| `{setting.key}` | `{default}` | {setting.doc} |")


def cmd_dlp_patterns(args):
    from .engine.dlp.catalog import BUILTIN
    for pattern in BUILTIN:
        checked = " (validated)" if pattern.validator else ""
        print(f"{pattern.id}{checked}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="mitrity-llm-gateway", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    def add(name, func, help_text):
        command = commands.add_parser(name, help=help_text)
        command.set_defaults(func=func)
        return command

    for name, func, help_text in (("ca", cmd_ca, "create a development CA"),
                                  ("server-cert", cmd_server_cert, "issue the gateway's server certificate"),
                                  ("client-cert", cmd_client_cert, "issue an agent's SPIFFE client certificate")):
        command = add(name, func, help_text)
        command.add_argument("--dir", required=True, help="where ca.crt/ca.key are and the new files go")
        command.add_argument("--overwrite", action="store_true")
        if name == "server-cert":
            command.add_argument("--host", action="append", required=True, help="DNS name or IP (repeatable)")
        if name == "client-cert":
            command.add_argument("--spiffe-id", required=True)
    add("hash-key", cmd_hash_key, "SHA-256 of an API key (from stdin) for api_key_sha256")
    add("check-config", cmd_check_config, "validate a config file").add_argument(
        "file", nargs="?", default=os.environ.get("MITRITY_CONFIG", gateway_config.DEFAULT_CONFIG_PATH))
    add("check-policy", cmd_check_policy, "validate a policy bundle").add_argument("file")
    dev = add("dev-setup", cmd_dev_setup, "development certificates, API key and policy (make run)")
    dev.add_argument("--dir", default="var")
    dev.add_argument("--policy-template", default="config/policy.yaml")
    add("config-keys", cmd_config_keys, "print the settings table")
    add("dlp-patterns", cmd_dlp_patterns, "list the built-in DLP catalog")
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except gateway_config.ConfigError as exc:
        raise SystemExit(f"config: {exc}")
    except (ValueError, FileExistsError, FileNotFoundError) as exc:
        raise SystemExit(f"{args.command}: {exc}")


if __name__ == "__main__":
    main()
