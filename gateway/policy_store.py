"""The worker's view of the policy policy-sync publishes in shared memory.

``current()`` is on every request's path: one aligned load of the segment's
generation word, compared with the generation already compiled. Only when it
changed does the worker copy the payload, decode and compile it (once per
generation); if that fails the previous policy stays in force. No lock is ever
taken: the segment is a seqlock that the reader only reads.
"""

import logging
import time

from policy_sync import bundle
from policy_sync.shm import SegmentError, SegmentMissing, SegmentReader

log = logging.getLogger("mitrity.policy")
ATTACH_RETRY_S = 0.01  # shm_open of a missing name costs microseconds


class PolicyStore:
    def __init__(self, segment_name, builtin_patterns=True):
        self.segment_name = segment_name
        self.builtin_patterns = builtin_patterns
        self._reader = None
        self._next_attach = 0.0
        self._policy = None
        self._generation = 0
        self._failed_generation = 0

    def _attach(self):
        now = time.monotonic()
        if now < self._next_attach:
            return None
        self._next_attach = now + ATTACH_RETRY_S
        try:
            self._reader = SegmentReader(self.segment_name)
        except SegmentMissing:
            return None
        except SegmentError as exc:
            log.error("policy segment %s unusable: %s", self.segment_name, exc)
            return None
        return self._reader

    def current(self):
        """The policy in force, or None when no valid policy was ever published."""
        reader = self._reader or self._attach()
        if reader is None:
            return None
        generation = reader.generation()
        if generation != self._generation and generation != self._failed_generation:
            self._load(reader)
        return self._policy

    def _load(self, reader):
        try:
            snapshot = reader.read()
            if snapshot is None:
                return
            policy = bundle.decode(snapshot.payload, snapshot.generation, snapshot.published_ns,
                                   self.builtin_patterns)
        except Exception as exc:  # keep the last good policy; never serve a half-read one
            self._failed_generation = reader.generation()
            log.error("policy generation %s could not be loaded (%s); keeping generation %s",
                      self._failed_generation, type(exc).__name__, self._generation)
            return
        self._policy, self._generation = policy, snapshot.generation

    def heartbeat_age_s(self):
        if self._reader is None:
            return None
        return max(0.0, time.time() - self._reader.heartbeat_ns() / 1e9)
