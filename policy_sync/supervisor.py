"""Start policy-sync from the gunicorn master, and restart it if it dies.

policy-sync is a separate program (``python -m policy_sync``) started with
fork+exec, so the master stays free of threads and of the sync's imports (a
thread in the master before a fork can hang the workers' TLS). The master's
loop calls ``ensure_running()`` once a second and on every SIGCHLD; a dead
policy-sync is restarted with a backoff, and the workers keep enforcing the
policy already in shared memory meanwhile.
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


class PolicySyncProcess:
    def __init__(self, policy_file, segment_name, master_pid, log_level="info"):
        self.args = [sys.executable, "-m", "policy_sync", "--policy-file", policy_file,
                     "--segment", segment_name, "--parent-pid", str(master_pid), "--log-level", log_level]
        self.segment_name = segment_name
        self.process = None
        self._delay = MIN_RESTART_DELAY_S
        self._not_before = 0.0
        self._started_at = 0.0

    def start(self):
        self.process = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, close_fds=True)
        self._started_at = time.monotonic()
        log.info("policy-sync started (pid: %s)", self.process.pid)

    def ensure_running(self):
        if self.process is None or self.process.poll() is None:
            return
        now = time.monotonic()
        if self._not_before == 0.0:
            # The master may already have reaped it (waitpid(-1)); poll() then says 0.
            log.error("policy-sync (pid: %s) exited with %s; restarting", self.process.pid, self.process.returncode)
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

    def remove_segment(self):
        SegmentWriter.unlink(self.segment_name)
