"""The gateway's own decision path, without sockets: how much of a call's CPU
is identity, body parsing, the mission check and the DLP scans.

    python -m bench.decision_path

Same small call as bench/proxy_overhead.py: API-key identity, a one-agent
policy, the built-in DLP catalog on the prompt and on the answer.
"""

import hashlib
import json
import timeit

from gateway import engine, jsonspans
from gateway.engine.redaction import scan_strings
from gateway.identity import credential, resolve
from gateway.providers import ADAPTERS, read_call
from policy_sync import bundle

KEY = "mtr_bench_key"
BODY = json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 16,
                   "messages": [{"role": "user", "content": "Say hello in five words."}]}).encode()
ANSWER = json.dumps({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                     "content": [{"type": "text", "text": "Hello there, how are you today?"}],
                     "stop_reason": "end_turn", "usage": {"input_tokens": 10, "output_tokens": 8}}).encode()


def main(calls=20000):
    document = {"revision": "bench", "agents": [{
        "id": "bench", "api_key_sha256": [hashlib.sha256(KEY.encode()).hexdigest()],
        "mission": {"allow": ["llm:send:anthropic:claude-sonnet-4-5*"]}}]}
    _, payload = bundle.prepare(json.dumps(document).encode())
    policy = bundle.decode(payload)
    adapter = ADAPTERS["anthropic"]

    def request_phase():
        agent = resolve(policy, credential(None, KEY), False)
        request = read_call(jsonspans.loads(BODY))
        engine.decide(policy, agent, "anthropic", request.model, adapter.prompt_strings(BODY))

    def answer_phase():
        scan_strings(policy.scanner, adapter.answer_strings(ANSWER), "response", "response_blocked")

    print("| step | CPU per call (µs) |\n|---|---|")
    for name, step in (("identity, parse, mission, prompt DLP", request_phase), ("answer DLP", answer_phase)):
        print(f"| {name} | {timeit.timeit(step, number=calls) / calls * 1e6:.1f} |")


if __name__ == "__main__":
    main()
