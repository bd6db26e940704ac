"""Start the gateway's helper processes from the gunicorn master, and restart
them if they die: policy-sync, and the usage collector.

Each is a separate program (``python -m ...``) started with fork+exec, so the
master stays free of threads and of their imports (a thread in the master
before a fork can hang the workers' TLS). The master's loop calls
``ensure_running()`` once a second and on every SIGCHLD; a dead process is
restarted with a backoff, and the workers carry on meanwhile (they keep the
policy already in shared memory, and keep spooling usage records).
"""

import logging
import subprocess
import sys
import time

from .shm import SegmentWriter

log = logging.getLogger("gunicorn.error")
MIN_RESTART_DELAY_S = 0.5
MAX_RESTART_DELAY_S = 30.0
STOP_TIMEOUT_S = 5.0


class SupervisedProcess:
    def __init__(self, name, module, args):
        self.name = name
        self.args = [sys.executable, "-m", module, *args]
        self.process = None
        self._delay = MIN_RESTART_DELAY_S
        self._not_before = 0.0
        self._started_at = 0.0

    def start(self):
        self.process = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, close_fds=True)
        self._started_at = time.monotonic()
        log.info("%s started (pid: %s)", self.name, self.process.pid)

    def ensure_running(self):
        if self.process is None or self.process.poll() is None:
            return
        now = time.monotonic()
        if self._not_before == 0.0:
            # The master may already have reaped it (waitpid(-1)); poll() then says 0.
            log.error("%s (pid: %s) exited with %s; restarting", self.name, self.process.pid,
                      self.process.returncode)
            if now - self._started_at > MAX_RESTART_DELAY_S:
                self._delay = MIN_RESTART_DELAY_S  # it had been running fine: no backoff
            self._not_before = now + self._delay
            self._delay = min(self._delay * 2, MAX_RESTART_DELAY_S)
        if now >= self._not_before:
            self._not_before = 0.0
            self.start()

    def stop(self):
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def policy_sync_process(policy_file, segment_name, master_pid, log_level="info"):
    return SupervisedProcess("policy-sync", "policy_sync", [
        "--policy-file", policy_file, "--segment", segment_name, "--parent-pid", str(master_pid),
        "--log-level", log_level])


def usage_collector_process(spool_dir, database, master_pid, log_level="info"):
    return SupervisedProcess("usage collector", "gateway.usage.collector", [
        "--spool", spool_dir, "--database", database, "--parent-pid", str(master_pid), "--log-level", log_level])


def remove_segment(name):
    SegmentWriter.unlink(name)
