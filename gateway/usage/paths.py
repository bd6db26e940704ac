"""Where usage records wait between the workers and the collector."""

import os


def usage_spool_dir(config):
    """Next to the SQLite store: ``<dir of usage.database>/usage-spool``."""
    return os.path.join(os.path.dirname(config["usage.database"]), "usage-spool")
