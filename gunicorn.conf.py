"""gunicorn settings for the Mitrity LLM Gateway: ``gunicorn -c gunicorn.conf.py gateway.wsgi``.

Everything here derives from the gateway's own YAML config ($MITRITY_CONFIG,
default config/gateway.yaml), validated by ``gateway.config``. gunicorn runs
this file in the master at start and again on SIGHUP.

The fork line, in one place:
- the master only parses config and starts policy-sync and the usage collector
  (fork+exec, policy_sync/supervisor.py); it opens no
  TLS context, maps no shared memory and starts no thread (gunicorn's control
  socket runs a thread, so it is off);
- each worker patches the standard library with gevent first
  (``workers.gevent_tls.GatewayWorker``), then imports ``gateway.wsgi`` and
  builds its SSL contexts, upstream pool, policy mapping and usage spool. No --preload.
"""

import os
import signal
import sys

from gateway import config as gateway_config
from gateway import metrics_dir
from gateway.usage.paths import usage_spool_dir
from policy_sync import supervisor
from workers.gevent_tls import HELD_ACROSS_FORK

_first_load = gateway_config.ACTIVE is None
try:
    _config = gateway_config.load_from_env()
    gateway_config.check_admin_token(_config)
except gateway_config.ConfigError as exc:
    if _first_load:
        print(f"mitrity-llm-gateway: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    # SIGHUP with a broken file: keep serving with the config in force.
    print(f"mitrity-llm-gateway: configuration error, keeping the previous config: {exc}", file=sys.stderr)
    _config = gateway_config.ACTIVE
gateway_config.ACTIVE = _config

# The policy segment is named after the master, so several gateways can share a host.
os.environ.setdefault("MITRITY_POLICY_SEGMENT", f"/mitrity-policy-{os.getpid()}")
if _first_load:
    # Every process counts into its own files here (gateway.metrics); they
    # inherit the variable, so it is set before anything is started.
    os.environ.setdefault(metrics_dir.ENV, metrics_dir.metrics_dir(_config))
    try:
        metrics_dir.prepare(os.environ[metrics_dir.ENV])
    except OSError as exc:
        print(f"mitrity-llm-gateway: cannot prepare the metrics directory {os.environ[metrics_dir.ENV]}: "
              f"{exc.strerror}", file=sys.stderr)
        sys.exit(2)

wsgi_app = "gateway.wsgi"
bind = [_config["server.bind"], _config["admin.bind"]]
workers = _config["server.workers"]
worker_class = "workers.gevent_tls.GatewayWorker"
worker_connections = _config["server.worker_connections"]
keepalive = max(1, int(_config["server.header_timeout_s"]))  # the worker applies the exact value
graceful_timeout = int(_config["server.graceful_timeout_s"])
timeout = 30  # worker heartbeat; gevent workers beat every second, whatever their streams do
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 16384
loglevel = _config["server.log_level"]
errorlog = "-"
proc_name = "mitrity-llm-gateway"
control_socket_disable = True
preload_app = False
logger_class = "gateway.logs.GatewayLogger"


def _helpers(arbiter):
    """policy-sync and the usage collector, as the config in force says."""
    return [
        supervisor.policy_sync_process(_config["policy.file"], os.environ["MITRITY_POLICY_SEGMENT"],
                                       arbiter.pid, _config["server.log_level"]),
        supervisor.usage_collector_process(usage_spool_dir(_config), _config["usage.database"], arbiter.pid,
                                           _config["server.log_level"]),
    ]


def when_ready(arbiter):
    arbiter.helpers = _helpers(arbiter)
    for helper in arbiter.helpers:
        helper.start()
    # A new worker installs its own signal handlers only after gevent has
    # patched it; a SIGTERM arriving before that would run the master's
    # handler copy and be lost (the worker would go on accepting). So the
    # stop signals are held across the fork, and the worker releases them
    # once its handlers are in place (GatewayWorker.init_signals).
    spawn_worker = arbiter.spawn_worker

    def spawn_worker_with_stop_signals_held():
        held = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_ACROSS_FORK)
        try:
            return spawn_worker()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
    arbiter.spawn_worker = spawn_worker_with_stop_signals_held
    # gunicorn has no per-turn hook; its loop calls manage_workers() every
    # second and after each SIGCHLD, which is when policy-sync is checked too.
    manage_workers = arbiter.manage_workers

    def manage_workers_and_helpers():
        manage_workers()
        for helper in arbiter.helpers:
            helper.ensure_running()
    arbiter.manage_workers = manage_workers_and_helpers


def on_reload(arbiter):
    # The policy file or the usage database may have moved: restart the
    # helpers with the new config. The policy segment stays, so workers keep
    # enforcing meanwhile, and their usage spool waits for the new collector.
    for helper in arbiter.helpers:
        helper.stop()
    arbiter.helpers = _helpers(arbiter)
    for helper in arbiter.helpers:
        helper.start()


def on_exit(arbiter):
    for helper in getattr(arbiter, "helpers", ()):
        helper.stop()
    supervisor.remove_segment(os.environ["MITRITY_POLICY_SEGMENT"])
