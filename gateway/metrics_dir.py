"""Where the processes' metric files live (see gateway.metrics).

Kept apart from gateway.metrics because the master prepares the directory but
must not import prometheus-client: it chooses its storage at import.
"""

import os

from .usage.paths import beside_database

ENV = "PROMETHEUS_MULTIPROC_DIR"


def metrics_dir(config):
    return beside_database(config, "metrics")


def prepare(directory):
    """Create the directory (owner only) and empty it of an earlier run's files."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db"):
            try:
                os.unlink(os.path.join(directory, name))
            except FileNotFoundError:
                pass
