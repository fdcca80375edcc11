"""``python -m pasodoble.rollout.vllm serve --model DIR [options]``: one role's engine server."""

import sys

from pasodoble.rollout.vllm.server import serve

if len(sys.argv) < 2 or sys.argv[1] != "serve":
    print("usage: python -m pasodoble.rollout.vllm serve --model DIR [options]", file=sys.stderr)
    raise SystemExit(2)
raise SystemExit(serve(sys.argv[2:]))
