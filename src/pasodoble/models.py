"""Loading the policy model and tokenizer: a Hugging Face name or directory, or the built-in 'tiny'.

``load_model_and_tokenizer("tiny", ...)`` builds the ~1 M-parameter Qwen3 model and byte-level
tokenizer of ``pasodoble.tiny`` (no hub, deterministic per seed). Any other value goes
through ``AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained``. The tokenizer always ends up
with a pad token and left padding (what batched generation needs).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from pasodoble.config import ModelConfig
from pasodoble.errors import UserError

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(name: str) -> torch.dtype:
    """``'bfloat16'`` -> ``torch.bfloat16`` (the names ``model.dtype`` accepts)."""
    try:
        return _DTYPES[name]
    except KeyError:
        raise UserError(f"unknown dtype {name!r}; use one of {', '.join(_DTYPES)}") from None


def _looks_local(name: str) -> bool:
    """A path rather than a hub id: starts like a path, or has more than one '/' (hub ids have one)."""
    return name.startswith((".", "/", "~")) or os.sep != "/" and os.sep in name or name.count("/") > 1


def load_tokenizer(name_or_path: str, *, trust_remote_code: bool = False):
    """Tokenizer of a directory or hub name, with a pad token and left padding.

    A directory whose ``tokenizer_config.json`` names ``PreTrainedTokenizerFast`` (e.g. one written by
    the tiny model) is loaded with that class directly, never re-interpreted by the model type.
    """
    path = Path(name_or_path).expanduser()
    cfg_file = path / "tokenizer_config.json"
    tok = None
    if cfg_file.is_file():
        cls = json.loads(cfg_file.read_text()).get("tokenizer_class")
        if cls in ("PreTrainedTokenizerFast", "TokenizersBackend"):
            tok = PreTrainedTokenizerFast.from_pretrained(str(path))
    if tok is None:
        tok = AutoTokenizer.from_pretrained(
            str(path) if path.exists() else name_or_path, trust_remote_code=trust_remote_code
        )
    return prepare_tokenizer(tok)


def prepare_tokenizer(tokenizer):
    """Give ``tokenizer`` a pad token (its EOS, else its UNK) if it has none; pad on the left."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        elif tokenizer.unk_token is not None:
            tokenizer.pad_token = tokenizer.unk_token
        else:
            raise UserError("the tokenizer has no pad, eos or unk token; set one before training")
    tokenizer.padding_side = "left"
    return tokenizer


def load_model_and_tokenizer(
    name_or_path: str,
    model_cfg: ModelConfig,
    *,
    seed: int = 0,
    dtype: str | None = None,
    field: str | None = None,
    progress: bool = True,
):
    """Load (or, for ``'tiny'``, build) the causal LM and its tokenizer.

    Args:
        name_or_path: ``'tiny'``, a local model directory, or a Hugging Face hub name.
        model_cfg: dtype, attention implementation, remote code and tokenizer override.
        seed: initialization seed of the tiny model (ignored for pretrained weights).
        dtype: load in this dtype instead of ``model_cfg.dtype`` (training passes ``'float32'``: the
            learner's master weights; ``model.dtype`` is then only the compute dtype).
        field: the config field or option ``name_or_path`` came from (``solver.model_path``,
            ``--model``), named in error messages.
        progress: False silences transformers' and huggingface_hub's progress bars ("Loading weights",
            downloads) while loading (``run.progress=false``).

    Raises:
        UserError: one line naming the directory, file or name (and ``field``): a local directory
            that does not exist or holds no ``config.json``, a corrupt or truncated weight file, or a
            name that cannot be loaded (offline, misspelt, not a causal LM).
    """
    dtype = torch_dtype(dtype or model_cfg.dtype)
    if name_or_path == "tiny":
        from pasodoble.tiny import build_tiny_model, build_tiny_tokenizer

        tok = build_tiny_tokenizer()
        model = build_tiny_model(tok, seed=seed, dtype=dtype)
        if model_cfg.tokenizer not in (None, "tiny"):
            tok = load_tokenizer(model_cfg.tokenizer, trust_remote_code=model_cfg.trust_remote_code)
        return model, prepare_tokenizer(tok)

    path = Path(name_or_path).expanduser()
    where = f" ({field})" if field else ""
    local = path.is_dir()
    if _looks_local(name_or_path) and not local:
        raise UserError(f"model directory {name_or_path}{where} does not exist")
    if local and not (path / "config.json").is_file():
        raise UserError(
            f"model directory {name_or_path}{where} holds no config.json: it is not a Hugging Face model "
            "directory (save one with save_pretrained, or point to the directory that holds config.json)"
        )
    source = str(path) if local else name_or_path
    kwargs = {"dtype": dtype, "trust_remote_code": model_cfg.trust_remote_code}
    if model_cfg.attn_implementation:
        kwargs["attn_implementation"] = model_cfg.attn_implementation
    try:
        with progress_bars(progress):
            model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except Exception as exc:  # a user's directory: corrupt weights or config raise many types
        if local:
            bad = _corrupt_weight_file(path)
            if bad is not None:
                raise UserError(
                    f"model file {bad}{where} is corrupt or truncated ({_one_line(exc)}); "
                    "copy or export the model again"
                ) from None
            raise UserError(f"cannot load model directory {name_or_path}{where}: {_one_line(exc)}") from None
        if not isinstance(exc, OSError):
            raise
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = " (HF_HUB_OFFLINE=1: only local directories and cached names load)" if offline else ""
        raise UserError(f"cannot load model {name_or_path!r}{where}{hint}: {_one_line(exc)}") from None
    tok_source = model_cfg.tokenizer or source
    try:
        tok = load_tokenizer(tok_source, trust_remote_code=model_cfg.trust_remote_code)
    except Exception as exc:  # OSError (missing files) or the tokenizers library's parse errors
        if not (isinstance(exc, OSError) or Path(tok_source).expanduser().is_dir()):
            raise
        raise UserError(f"cannot load tokenizer {tok_source!r}: {_one_line(exc)}") from None
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


@contextlib.contextmanager
def progress_bars(enabled: bool) -> Iterator[None]:
    """With ``enabled=False``: transformers' and huggingface_hub's tqdm bars off inside the block, restored
    after (``transformers.utils.logging.disable_progress_bar`` turns both off)."""
    from huggingface_hub.utils import are_progress_bars_disabled
    from transformers.utils import logging as hf_logging

    if enabled:
        yield
        return
    was_on, hub_was_off = hf_logging.is_progress_bar_enabled(), are_progress_bars_disabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()
        if hub_was_off:  # enable_progress_bar turned the hub's back on too
            from huggingface_hub.utils import disable_progress_bars

            disable_progress_bars()


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one short line (library messages can span many lines)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _corrupt_weight_file(path: Path) -> Path | None:
    """The first ``*.safetensors`` file of ``path`` whose header or size is inconsistent, if any."""
    from safetensors import safe_open

    for file in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except Exception:  # safetensors raises SafetensorError, OSError or others for a bad file
            return file
    return None


SMALL_MODEL_PARAMS = 50_000_000


def set_cpu_threads(model: torch.nn.Module, threads: int | None) -> None:
    """Set torch's intra-op threads for a model on CPU; ``None`` (auto) picks 1 below 50 M parameters.

    Small models are overhead-bound: their matrix products gain nothing from more threads, and on a
    shared 2-core machine 2 threads measured 20-90x slower per tiny dual-play step (0.2 s vs 4-19 s
    with another process busy). Larger models and GPU runs keep torch's default.
    """
    if next(model.parameters()).device.type != "cpu":
        return
    if threads is None and sum(p.numel() for p in model.parameters()) < SMALL_MODEL_PARAMS:
        threads = 1
    if threads is not None:
        torch.set_num_threads(threads)
