"""A WSGI app that does nothing, for bench.stack_floor only: it reads the
request body and answers a fixed small JSON, on both listeners. Served by the
gateway's own gunicorn config and worker class, it measures what the serving
stack (gunicorn, gevent, the worker's TLS) costs before any gateway work."""

ANSWER = (b'{"id":"msg_0","type":"message","role":"assistant","model":"claude-sonnet-4-5",'
          b'"content":[{"type":"text","text":"Hello there, how are you?"}],"stop_reason":"end_turn",'
          b'"usage":{"input_tokens":12,"output_tokens":7}}')


def application(environ, start_response):
    environ["wsgi.input"].read()
    start_response("200 OK", [("content-type", "application/json"), ("content-length", str(len(ANSWER)))])
    return [ANSWER]
