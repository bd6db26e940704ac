"""Assemble the gateway from the active configuration (per worker)."""

import os

from . import config as gateway_config
from .admin import Admin
from .pipeline import Gateway
from .policy_store import PolicyStore
from .upstream import Upstreams
from .usage.paths import usage_spool_dir
from .usage.spool import SpoolWriter
from .usage.store import UsageStore

SEGMENT_ENV = "MITRITY_POLICY_SEGMENT"


def active_config():
    """The config the master validated (inherited across the fork), else the file."""
    return gateway_config.ACTIVE or gateway_config.load_from_env()


def build_application(config=None):
    config = config or active_config()
    policies = PolicyStore(os.environ[SEGMENT_ENV], config["dlp.builtin_patterns"])
    upstreams = Upstreams(config["providers"], config["upstream.ca_file"],
                          config["upstream.connect_timeout_s"], config["upstream.read_timeout_s"])
    spool_dir = usage_spool_dir(config)
    admin = Admin(policies, gateway_config.admin_token(config), UsageStore(config["usage.database"], readonly=True),
                  spool_dir)
    spool = SpoolWriter(spool_dir, f"worker-{os.getpid()}")
    return Gateway(config, policies, upstreams, admin, spool)
