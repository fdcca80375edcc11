"""The vLLM backend without a GPU: one colocated engine serving both roles, the engine server's protocol
(weight push with its hash, token, size caps) and TRL's client, all against fake engines and local
servers on 127.0.0.1; the real-engine test runs only where vllm and CUDA are present."""

from __future__ import annotations

import http.client
import json
import threading
import time

import pytest
import torch

from pasodoble.config import load_config
from pasodoble.errors import UserError
from pasodoble.rollout.base import SamplingParams
from pasodoble.rollout.vllm import ColocatedEngine, RemoteEngine, TRLEngine, VLLMBackend, make_server
from pasodoble.rollout.vllm import local as local_mod
from pasodoble.rollout.vllm import server as server_mod
from pasodoble.testing.tiny import build_tiny_model
from pasodoble.weights import full_state_items
from tests.fakes.engine import FakeEngine, fingerprint


def _cfg(*overrides):
    return load_config(None, list(overrides))


# --------------------------------------------------------------------------------------------------
# Colocated: one engine per process for both roles


def test_generate_converts_outputs(tiny_model, tiny_tokenizer):
    eos = tiny_tokenizer.eos_token_id
    engine = FakeEngine(eos)
    backend = VLLMBackend(tiny_model, tiny_tokenizer, engine=engine, role="solver")
    prompts = [[1, 2, 3], [1, 2, 3], [4]]
    out = backend.generate(
        prompts, SamplingParams(n=2, temperature=0.6, max_new_tokens=8, return_logprobs=True)
    )
    assert [len(g) for g in out] == [2, 2, 2]
    c = out[0][0]
    assert c.prompt_ids == [1, 2, 3] and c.completion_ids[-1] == eos and c.finish_reason == "eos"
    assert c.logprobs == [-0.5, -0.5, -0.5]
    seeds = [r["sampling"]["seed"] for r in engine.requests]
    assert len(set(seeds)) == 3  # repeated prompts get their own seeds
    assert eos in engine.requests[0]["sampling"]["stop_token_ids"]
    assert engine.requests[0]["prompt_token_ids"] == [1, 2, 3]  # token ids in, never text
    short = backend.generate([[1]], SamplingParams(max_new_tokens=2))
    assert short[0][0].finish_reason == "length" and short[0][0].logprobs is None


def test_stop_ids_include_the_chat_end_of_turn_for_a_base_model_eos(tiny_model, tiny_tokenizer):
    from pasodoble.testing.tiny import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    tok.eos_token = "<|endoftext|>"  # as Qwen3-*-Base and Qwen2.5 ship it
    tiny_model.generation_config.eos_token_id = tok.eos_token_id
    engine = FakeEngine(eos=2)
    backend = VLLMBackend(tiny_model, tok, engine=engine, role="proposer")
    out = backend.generate([[1, 5]], SamplingParams(max_new_tokens=8))[0][0]
    assert engine.requests[0]["sampling"]["stop_token_ids"] == [0, 2]  # <|endoftext|>, <|im_end|>
    assert out.completion_ids[-1] == 2 and out.finish_reason == "eos"


def test_one_engine_serves_both_roles_with_weights_swapped_at_each_switch(tiny_tokenizer, monkeypatch):
    freed = []
    monkeypatch.setattr(local_mod, "free_device_cache", lambda: freed.append(len(fake.events)))
    fake = FakeEngine(tiny_tokenizer.eos_token_id)
    shared = ColocatedEngine(fake, sleep_between_steps=True, dtype=torch.bfloat16)
    assert fake.events == ["sleep2"]  # dummy weights: asleep until the first role generates
    proposer, solver = build_tiny_model(tiny_tokenizer, seed=0), build_tiny_model(tiny_tokenizer, seed=1)
    roles = {
        "proposer": VLLMBackend(proposer, tiny_tokenizer, engine=shared, role="proposer", dtype="bfloat16"),
        "solver": VLLMBackend(solver, tiny_tokenizer, engine=shared, role="solver", dtype="bfloat16"),
    }

    def bf16(model):
        return fingerprint(full_state_items(model, dtype=torch.bfloat16, skip_tied=True))

    params = SamplingParams(max_new_tokens=8)
    expected = [bf16(proposer), bf16(solver)]
    roles["proposer"].generate([[1, 5]], params)
    roles["solver"].generate([[1, 6]], params)
    with torch.no_grad():  # an update of the Proposer
        next(proposer.parameters()).add_(1.0)
    roles["proposer"].sync_weights(proposer)
    roles["proposer"].generate([[1, 7]], params)
    roles["solver"].generate([], params)  # a process with no prompts still keeps the sequence

    assert fake.served == [*expected, bf16(proposer)] and expected[0] != bf16(proposer)
    one_generation = ["wake_weights", "load", "reset", "wake_kv_cache", "generate", "sleep2"]
    assert fake.events == ["sleep2", *one_generation * 3, *[e for e in one_generation if e != "generate"]]
    # gc + empty_cache right before every wake-up (event index = position of the wake-up)
    wakes = [i for i, e in enumerate(fake.events) if e.startswith("wake")]
    assert freed == wakes
    assert roles["proposer"].pop_sync_seconds() > 0 and roles["proposer"].pop_sync_seconds() == 0


def test_without_sleep_the_engine_reloads_only_at_switches_and_after_updates(tiny_tokenizer):
    fake = FakeEngine(tiny_tokenizer.eos_token_id)
    shared = ColocatedEngine(fake, sleep_between_steps=False, dtype=None)
    p_model, s_model = build_tiny_model(tiny_tokenizer, seed=0), build_tiny_model(tiny_tokenizer, seed=1)
    p = VLLMBackend(p_model, tiny_tokenizer, engine=shared, role="proposer")
    s = VLLMBackend(s_model, tiny_tokenizer, engine=shared, role="solver")
    params = SamplingParams(max_new_tokens=8)
    p.generate([[1]], params)
    p.generate([[1]], params)  # same role, same weights: no load
    s.generate([[1]], params)  # switch
    s.sync_weights(s_model)  # update: stale
    s.generate([[1]], params)
    assert fake.events == ["load", "reset", "generate", "generate", "load", "reset", "generate"] + [
        "load",
        "reset",
        "generate",
    ]
    assert shared.loads == 3


def test_colocated_backends_share_one_engine_started_from_dummy_weights(
    tiny_model, tiny_tokenizer, monkeypatch
):
    import os

    built = []

    class Started(FakeEngine):
        version, cpu, sleep_mode, reload = "vllm (fake)", False, True, False  # what the start-up line names

        def __init__(self, model_dir, **kw):
            super().__init__(eos=2)
            built.append((kw, sorted(os.listdir(model_dir))))

    monkeypatch.setattr(local_mod, "LocalEngine", Started)
    monkeypatch.setattr(local_mod, "_COLOCATED", {})
    cfg = _cfg("model.dtype=bfloat16")  # defaults: colocated, prompts 2048 + 1024 new tokens
    from pasodoble.rollout import make_backend
    from pasodoble.topology import engine_context_length

    def build(model, role):
        return make_backend(
            "vllm",
            model,
            tiny_tokenizer,
            role=role,
            vllm_cfg=cfg.vllm,
            engine_dtype=cfg.model.dtype,
            max_model_len=engine_context_length(cfg),
        )

    proposer = build(tiny_model, "proposer")
    solver = build(build_tiny_model(tiny_tokenizer, seed=1), "solver")
    assert proposer.shared is solver.shared and len(built) == 1  # one engine in this process
    kw, files = built[0]
    assert kw["load_format"] == "dummy" and kw["enable_sleep_mode"] and kw["dtype"] == "bfloat16"
    assert kw["max_model_len"] == 3072 and not kw["external_launcher"]
    assert "config.json" in files and not any(
        f.endswith((".safetensors", ".bin")) for f in files
    )  # no weights
    assert proposer.shared.engine.events == ["sleep2"]  # asleep until a role generates


def test_local_generation_refuses_to_gather_sharded_weights(tiny_model, tiny_tokenizer, monkeypatch):
    shared = ColocatedEngine(FakeEngine(2), sleep_between_steps=True, dtype=None)
    backend = VLLMBackend(tiny_model, tiny_tokenizer, engine=shared, role="solver")
    monkeypatch.setattr(local_mod, "is_sharded", lambda model: True)
    with pytest.raises(RuntimeError, match="call pin\\(\\) on every process first"):
        backend.local().generate([[1]], SamplingParams(max_new_tokens=8))
    monkeypatch.setattr(local_mod, "is_sharded", lambda model: False)
    assert len(backend.local().generate([[1]], SamplingParams(max_new_tokens=8))) == 1


def test_hold_keeps_the_weights_for_a_main_process_evaluation_under_sleep_mode(
    tiny_model, tiny_tokenizer, monkeypatch
):
    """The in-training evaluation with FSDP2 + sleep mode: every process holds the Solver's weights (a
    collective load), then the main process generates alone several times without a reload (which would
    need the other processes' shards), and the next collective generation puts the engine to sleep again."""
    fake = FakeEngine(2)
    shared = ColocatedEngine(fake, sleep_between_steps=True, dtype=None)
    backend = VLLMBackend(tiny_model, tiny_tokenizer, engine=shared, role="solver")
    monkeypatch.setattr(local_mod, "is_sharded", lambda model: True)
    backend.hold()  # every process
    assert fake.events == ["sleep2", "wake_weights", "load", "reset", "wake_kv_cache"]
    params = SamplingParams(max_new_tokens=8)
    for _ in range(3):  # evaluation batches on the main process
        assert len(backend.local().generate([[1]], params)) == 1
    assert fake.events[5:] == ["generate"] * 3  # no reload, no sleep while held
    backend.generate([[1]], params)  # the next training step: collective, sleeps afterwards
    assert fake.events[-2:] == ["generate", "sleep2"]
    with pytest.raises(RuntimeError, match="call pin"):  # asleep: a solo generation must not load shards
        backend.local().generate([[1]], params)


def test_server_loads_a_whole_update_at_once_for_an_engine_that_cannot_stream(
    server, tiny_model, tiny_tokenizer
):
    """A CPU engine (reload route) needs every tensor of a layer in one call: the server gathers the
    buckets and loads them at /finish_update, with one reset after."""

    class WholeUpdates(FakeEngine):
        streams_weights = False

    fake = WholeUpdates(tiny_tokenizer.eos_token_id)
    remote = RemoteEngine(server(fake), connect_timeout_s=5, bucket_bytes=200_000)
    VLLMBackend(
        tiny_model,
        tiny_tokenizer,
        engine=remote,
        role="solver",
        vllm_cfg=_cfg("vllm.mode=server", "vllm.solver_url=x").vllm,
    )
    assert fake.events == ["load", "reset"]
    assert len(fake.weights) == len(tiny_model.state_dict()) - 1  # all of it, the tied head aside
    assert remote.health()["weights_hash"] == remote.pushed_hash


def test_tied_weights_are_sent_once_and_untied_ones_always(tiny_tokenizer):
    tied = build_tiny_model(tiny_tokenizer)
    names = [n for n, _ in full_state_items(tied, skip_tied=True)]
    assert "lm_head.weight" not in names and "model.embed_tokens.weight" in names
    assert len(names) == len(tied.state_dict()) - 1
    untied = build_tiny_model(tiny_tokenizer, tie_word_embeddings=False)
    assert [n for n, _ in full_state_items(untied, skip_tied=True)] == list(untied.state_dict())


def test_missing_vllm_is_a_user_error(tiny_model, tiny_tokenizer):
    try:
        import vllm  # noqa: F401

        pytest.skip("vllm is installed")
    except ImportError:
        pass
    from pasodoble.rollout import make_backend

    with pytest.raises(UserError, match="install the vllm extra"):
        make_backend("vllm", tiny_model, tiny_tokenizer, role="proposer")


# --------------------------------------------------------------------------------------------------
# Our engine server


@pytest.fixture
def server():
    started = []

    def start(engine, **kw):
        srv = make_server(engine, "127.0.0.1", 0, **kw)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        started.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield start
    for srv in started:
        srv.shutdown()
        srv.server_close()


def test_server_mode_pushes_weights_at_step_0_and_checks_the_hash(server, tiny_model, tiny_tokenizer):
    fake = FakeEngine(tiny_tokenizer.eos_token_id)
    url = server(fake)
    remote = RemoteEngine(url, connect_timeout_s=5, bucket_bytes=200_000)  # several buckets
    assert remote.health()["weights_hash"] == "initial"
    cfg = _cfg("vllm.mode=server", f"vllm.solver_url={url}", "model.dtype=bfloat16")
    backend = VLLMBackend(tiny_model, tiny_tokenizer, engine=remote, role="solver", vllm_cfg=cfg.vllm)
    step0 = backend.pop_sync_seconds()
    assert step0 > 0  # the step-0 push, reported with the first step's time/weight_sync
    # built = pushed: the engine holds the learner's weights (in the engine's bfloat16) before any step;
    # the tied lm_head.weight is not sent (the engine ties it to the embeddings itself)
    state = tiny_model.state_dict()
    state.pop("lm_head.weight")
    assert set(fake.weights) == set(state)
    assert all(torch.equal(fake.weights[k], v.to(torch.bfloat16)) for k, v in state.items())
    assert fake.events.count("load") >= 2 and fake.events[-1] == "reset"  # buckets, then one reset
    health = remote.health()
    assert health["weights_hash"] == remote.pushed_hash and health["weights_version"] == 1
    out = backend.generate([[1, 2], [3]], SamplingParams(n=3, max_new_tokens=8, return_logprobs=True))
    assert [len(g) for g in out] == [3, 3] and out[1][2].completion_ids[-1] == tiny_tokenizer.eos_token_id
    assert fake.calls == [2] and "sleep2" not in fake.events  # one request; a server engine keeps its GPU
    with torch.no_grad():
        next(tiny_model.parameters()).add_(1.0)
    first = remote.pushed_hash
    backend.sync_weights(tiny_model)
    assert remote.health()["weights_version"] == 2 and remote.pushed_hash != first
    assert torch.equal(fake.weights[next(iter(state))], next(tiny_model.parameters()).to(torch.bfloat16))
    assert backend.pop_sync_seconds() == 0  # later pushes happen inside sync_weights, which the caller times


def test_a_hash_mismatch_after_a_push_is_an_error(server, tiny_model, tiny_tokenizer):
    class Restarted(RemoteEngine):
        def health(self, timeout=10.0):
            return {**super().health(timeout), "weights_hash": "initial"}  # an engine that lost the push

    url = server(FakeEngine(tiny_tokenizer.eos_token_id))
    cfg = _cfg("vllm.mode=server", f"vllm.proposer_url={url}")
    with pytest.raises(RuntimeError, match="not serving the trained policy"):
        VLLMBackend(
            tiny_model,
            tiny_tokenizer,
            engine=Restarted(url, connect_timeout_s=5),
            role="proposer",
            vllm_cfg=cfg.vllm,
        )


def _post(url, route, body=b"{}", headers=None, length=None):
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    conn.putrequest("POST", route)
    for k, v in hdrs.items():
        conn.putheader(k, v)
    if length is not False:
        conn.putheader("Content-Length", str(len(body) if length is None else length))
    conn.endheaders()
    if length is None:
        conn.send(body)
    resp = conn.getresponse()
    out = resp.status, json.loads(resp.read() or b"{}")
    conn.close()
    return out


def test_server_requires_the_token_caps_bodies_and_validates_requests(server, tiny_tokenizer):
    fake = FakeEngine(tiny_tokenizer.eos_token_id)
    url = server(fake, token="s3cret", max_body_bytes=1000, max_json_bytes=400)
    good = {"Authorization": "Bearer s3cret"}
    # /health stays open (it is what clients poll), every POST needs the token
    assert RemoteEngine(url, connect_timeout_s=5).health()["status"] == "ok"
    assert _post(url, "/reset_prefix_cache")[0] == 401
    assert _post(url, "/update_weights", b"x", {"Authorization": "Bearer wrong"})[0] == 401
    assert _post(url, "/reset_prefix_cache", headers=good)[0] == 200
    # size caps are checked before the body is read
    assert _post(url, "/update_weights", b"", good, length=10**9)[0] == 413
    assert _post(url, "/generate", b"", good, length=401)[0] == 413
    assert _post(url, "/generate", b"", good, length=False)[0] == 411
    # malformed requests are 400s naming the field, and never reach the engine
    assert _post(url, "/generate", b"{not json", good)[0] == 400
    status, body = _post(
        url, "/generate", json.dumps({"requests": [{"prompt_token_ids": []}]}).encode(), good
    )
    assert status == 400 and "prompt_token_ids" in body["error"]
    bad = {"requests": [{"prompt_token_ids": [1], "sampling": {"n": 1}}]}
    status, body = _post(url, "/generate", json.dumps(bad).encode(), good)
    assert status == 400 and "sampling.temperature" in body["error"]
    assert _post(url, "/update_weights", b"not safetensors", {**good, "X-Bucket": "0"})[0] == 400
    assert fake.events == ["reset"]
    # a client with the token works end to end
    remote = RemoteEngine(url, connect_timeout_s=5, token="s3cret")
    req = {
        "prompt_token_ids": [1],
        "sampling": {
            "n": 1,
            "temperature": 1.0,
            "top_p": 1.0,
            "top_k": 0,
            "max_tokens": 4,
            "seed": 0,
            "logprobs": False,
            "stop_token_ids": [2],
        },
    }
    assert len(remote.generate([req])) == 1


def test_backend_sends_the_token_from_the_configured_environment_variable(
    server, tiny_model, tiny_tokenizer, monkeypatch
):
    url = server(FakeEngine(tiny_tokenizer.eos_token_id), token="abc")
    monkeypatch.setenv("MY_ENGINE_TOKEN", "abc")
    cfg = _cfg(
        "vllm.mode=server",
        f"vllm.solver_url={url}",
        "vllm.token_env=MY_ENGINE_TOKEN",
        "vllm.connect_timeout_s=5",
    )
    backend = VLLMBackend(
        tiny_model, tiny_tokenizer, role="solver", vllm_cfg=cfg.vllm
    )  # builds its own client
    assert backend.engine.token == "abc" and backend.engine.health()["weights_version"] == 1
    monkeypatch.delenv("MY_ENGINE_TOKEN")
    with pytest.raises(RuntimeError, match="HTTP 401"):
        VLLMBackend(tiny_model, tiny_tokenizer, role="solver", vllm_cfg=cfg.vllm)


def test_serve_listens_on_loopback_and_refuses_an_open_address_without_a_token(monkeypatch, capsys):
    monkeypatch.delenv(server_mod.TOKEN_ENV, raising=False)
    built = []

    class NoEngine:
        def __init__(self, model_dir, **kw):
            built.append(kw)
            raise SystemExit(0)  # stop before serving

    monkeypatch.setattr(server_mod, "LocalEngine", NoEngine)
    with pytest.raises(SystemExit) as exc:
        server_mod.serve(["--model", "m", "--host", "0.0.0.0"])
    assert exc.value.code == 2 and "PASODOBLE_ENGINE_TOKEN" in capsys.readouterr().err and not built
    with pytest.raises(SystemExit):
        server_mod.serve(["--model", "m"])  # default host: loopback, no token needed
    monkeypatch.setenv(server_mod.TOKEN_ENV, "t")
    with pytest.raises(SystemExit):
        server_mod.serve(["--model", "m", "--host", "0.0.0.0", "--load-format", "dummy"])
    assert len(built) == 2 and built[1]["load_format"] == "dummy"
    assert (
        server_mod._is_loopback("127.0.0.1")
        and server_mod._is_loopback("::1")
        and server_mod._is_loopback("localhost")
    )
    assert not server_mod._is_loopback("0.0.0.0") and not server_mod._is_loopback("10.0.0.5")


def test_remote_calls_time_out_and_fail_loudly(server, tiny_tokenizer):
    slow = RemoteEngine(server(FakeEngine(2, delay_s=3.0)), connect_timeout_s=5, request_timeout_s=0.5)
    req = {
        "prompt_token_ids": [1],
        "sampling": {
            "n": 1,
            "temperature": 1.0,
            "top_p": 1.0,
            "top_k": 0,
            "max_tokens": 4,
            "seed": 0,
            "logprobs": False,
            "stop_token_ids": [2],
        },
    }
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="failed after at most"):
        slow.generate([req])
    assert time.monotonic() - t0 < 2.5
    broken = RemoteEngine(server(FakeEngine(2, fail=True)), connect_timeout_s=5)
    with pytest.raises(RuntimeError, match="HTTP 500.*engine exploded"):
        broken.generate([req])


def test_unreachable_server_is_a_user_error():
    with pytest.raises(UserError, match="did not answer /health"):
        RemoteEngine("http://127.0.0.1:9", connect_timeout_s=0.3)


# --------------------------------------------------------------------------------------------------
# TRL's VLLMClient against a fake vLLM OpenAI server


@pytest.fixture
def fake_vllm_server():
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: dict[str, list] = {"completions": [], "resets": []}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _json(self, payload):
            body = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == "/health":
                self._json({})
            elif self.path == "/v1/models":
                self._json({"data": [{"id": "fake-model"}]})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
            if self.path == "/reset_prefix_cache":
                seen["resets"].append(1)
                return self._json({"success": True})
            seen["completions"].append(body)
            choices = []
            for prompt in body["prompt"]:
                for j in range(body["n"]):
                    ids = [body["seed"] % 50 + 3 + j, 9, body["stop_token_ids"][0]]
                    lp = None
                    if body["logprobs"] is not None:  # the sampled token, and a more likely other token
                        lp = {
                            "tokens": [f"token_id:{t}" for t in ids],
                            "token_logprobs": [-1.0, -2.0, -3.0],
                            "top_logprobs": [{"token_id:99": -0.01} for _ in ids],
                        }
                    choices.append({"prompt_token_ids": prompt, "token_ids": ids, "logprobs": lp})
            self._json({"choices": choices})

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", seen
    srv.shutdown()
    srv.server_close()


def test_trl_client_generates_with_per_prompt_seeds_and_streams_weights(
    fake_vllm_server, tiny_model, tiny_tokenizer, monkeypatch
):
    import trl.generation.vllm_client as trl_client

    monkeypatch.setattr(trl_client, "is_vllm_available", lambda *a, **k: True)  # no vLLM here: no NCCL
    url, seen = fake_vllm_server
    client = trl_client.VLLMClient(base_url=url, connection_timeout=5)
    streamed = {}
    client.init_communicator = lambda device: streamed.setdefault("init", device)
    client.update_named_params = lambda metadata, items: streamed.update(
        metadata=metadata, tensors=[(n, t.clone()) for n, t in items]
    )
    cfg = _cfg("vllm.mode=trl_server", f"vllm.proposer_url={url}", "model.dtype=bfloat16")
    backend = VLLMBackend(
        tiny_model, tiny_tokenizer, role="proposer", vllm_cfg=cfg.vllm, engine=TRLEngine(url, client=client)
    )
    # step 0: the weights went out once, announced with their names, engine dtype and shapes, then a reset
    state = tiny_model.state_dict()
    state.pop("lm_head.weight")  # tied to the embeddings
    assert [m[0] for m in streamed["metadata"]] == list(state) == [n for n, _ in streamed["tensors"]]
    assert all(m[1] == "bfloat16" and m[2] == list(state[m[0]].shape) for m in streamed["metadata"])
    assert all(t.dtype == torch.bfloat16 for _, t in streamed["tensors"]) and seen["resets"] == [1]
    params = SamplingParams(n=2, max_new_tokens=16, seed=5, return_logprobs=True)
    out = backend.generate([[1, 2], [1, 2], [3]], params)
    # one /v1/completions request per prompt, each with its own seed and the stop ids
    assert len(seen["completions"]) == 3
    assert len({r["seed"] for r in seen["completions"]}) == 3
    assert all(
        r["stop_token_ids"] == backend.eos_token_ids and r["max_tokens"] == 16 for r in seen["completions"]
    )
    c = out[0][0]
    assert c.completion_ids[-1] in backend.eos_token_ids and c.finish_reason == "eos"
    assert c.logprobs == [-1.0, -2.0, -3.0]  # the sampled tokens' entries, not the likelier token 99
    assert [len(g) for g in out] == [2, 2, 2]


# --------------------------------------------------------------------------------------------------
# Real engine (GPU with vllm only)


def test_real_vllm_engine_generates_and_syncs(tiny_model, tiny_tokenizer):
    pytest.importorskip("vllm")
    if not torch.cuda.is_available():
        pytest.skip("vLLM training paths need a CUDA GPU")
    cfg = _cfg(
        "vllm.gpu_memory_utilization=0.2",
        "vllm.enforce_eager=true",
        "rollout.max_prompt_tokens=64",
        "rollout.max_new_tokens=16",
    )
    model = tiny_model.cuda()
    backend = VLLMBackend(
        model, tiny_tokenizer, role="proposer", vllm_cfg=cfg.vllm, dtype=cfg.model.dtype, max_model_len=80
    )
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=16, seed=3, return_logprobs=True)
    first = backend.generate([[1, 5, 6]], params)
    assert len(first[0]) == 2 and len(first[0][0].logprobs) == len(first[0][0].completion_ids)

    # Greedy outputs after an update change exactly as the transformers backend's do.
    from pasodoble.rollout.hf import HFBackend

    hf = HFBackend(model, tiny_tokenizer)
    greedy = SamplingParams(n=1, temperature=1.0, top_k=1, max_new_tokens=12, seed=0)
    prompts = [[1, 5, 6], [1, 7, 8, 9], [1, 10]]

    def ids(b):
        return [group[0].completion_ids for group in b.generate(prompts, greedy)]

    before = ids(backend)
    assert before == ids(hf)
    gen = torch.Generator(device="cuda").manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen, device="cuda") * 0.5)
    backend.sync_weights(model)
    hf.sync_weights(model)
    after = ids(backend)
    assert after == ids(hf)
    assert after != before
