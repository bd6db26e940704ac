"""The gateway's working files next to the SQLite store: the usage spool
(records waiting between the workers and the collector) and the metric files."""

import os


def beside_database(config, name):
    """``<dir of usage.database>/<name>``."""
    return os.path.join(os.path.dirname(os.path.abspath(config["usage.database"])), name)


def usage_spool_dir(config):
    return beside_database(config, "usage-spool")
