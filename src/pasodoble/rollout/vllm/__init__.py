"""The vLLM rollout backend (optional extra): one module per mode and one for what they share.

``backend.py`` (``VLLMBackend``), ``local.py`` (the in-process engine: colocated mode and the server's
engine), ``server.py`` (our engine server and its client), ``trl.py`` (TRL's client of vLLM's own
server), ``common.py`` (records, Protocol, version checks). Only ``local.py`` imports ``vllm``, and only
``common.trl_client_class`` imports ``trl``, both when an engine is built. docs/scaling.md describes the
modes, the server protocol and the tested versions.
"""

from pasodoble.rollout.vllm.backend import VLLMBackend, max_model_len
from pasodoble.rollout.vllm.local import ColocatedEngine, LocalEngine
from pasodoble.rollout.vllm.server import RemoteEngine, make_server, serve
from pasodoble.rollout.vllm.trl import TRLEngine

__all__ = [
    "ColocatedEngine",
    "LocalEngine",
    "RemoteEngine",
    "TRLEngine",
    "VLLMBackend",
    "make_server",
    "max_model_len",
    "serve",
]
