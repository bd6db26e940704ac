"""The gateway with usage recording turned off, for bench.usage_overhead only.

Identical to ``gateway.wsgi`` except that calls are not handed to the usage
spool (no record is built or written; the collector idles). Never deploy it:
every governed call must leave a usage record.
"""

from gateway.wsgi import application

application.usage_spool = None
