"""Logging for the gateway processes.

gunicorn's access log is off: it would cost a formatted line per request and
can carry request lines and headers. Instead the pipeline logs one metadata
line per call (``mitrity.gateway``), which never holds content or keys. The
gateway's loggers write where gunicorn's error log writes.
"""

import logging
import sys

from gunicorn import glogging


def setup_helper_logging(name, level):
    """Logging of a helper process (policy-sync, the usage collector): standard
    error, in the shape of gunicorn's lines, with the helper's name."""
    logging.basicConfig(stream=sys.stderr, level=level.upper(),
                        format=f"[%(asctime)s] [%(process)d] [%(levelname)s] {name}: %(message)s",
                        datefmt="%Y-%m-%d %H:%M:%S %z")


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
