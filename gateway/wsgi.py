"""The WSGI entry point: ``gunicorn -c gunicorn.conf.py gateway.wsgi``.

gunicorn imports this module in each worker after the fork, after gevent has
patched the standard library (see gunicorn.conf.py and workers/), so the
upstream session, the SSL contexts and the shared-memory mapping are all
made per worker.
"""

from .app import build_application

application = build_application()
