"""Logging for the gateway processes.

gunicorn's access log is off: it would cost a formatted line per request and
can carry request lines and headers. Instead the pipeline logs one metadata
line per call (``mitrity.gateway``), which never holds content or keys. The
gateway's loggers write where gunicorn's error log writes.
"""

import logging

from gunicorn import glogging


class GatewayLogger(glogging.Logger):
    access_log_enabled = False

    def access(self, resp, req, environ, request_time):
        pass

    def setup(self, cfg):
        super().setup(cfg)
        gateway_log = logging.getLogger("mitrity")
        gateway_log.handlers = list(self.error_log.handlers)
        gateway_log.setLevel(self.error_log.level)
        gateway_log.propagate = False
