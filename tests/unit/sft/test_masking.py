"""SFT loss masking: only assistant tokens carry loss; packing does not change the masked loss."""

from __future__ import annotations

import json

import pytest
import torch

from pasodoble.errors import UserError
from pasodoble.prompts import SOLVER, user_message
from pasodoble.sft.train import (
    IGNORE,
    SFTConfig,
    _micro_batches,
    encode_chat,
    masked_lm_loss,
    pack_rows,
    packed_batch,
    pad_batch,
    read_chat_jsonl,
)

ANSWER = "<think>\nAdd 3 and 4.\n</think>\n3 + 4 = 7. The answer is \\boxed{7}."


def _conversation() -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "You are a careful solver."},
        {"role": "user", "content": user_message(SOLVER, problem="What is 3 + 4?")},
        {"role": "assistant", "content": ANSWER},
    ]


def test_labels_are_ignored_exactly_on_system_and_prompt_tokens(tiny_tokenizer):
    tok = tiny_tokenizer
    conv = _conversation()
    example = encode_chat(conv, tok)
    prompt = tok.apply_chat_template(conv[:-1], tokenize=False, add_generation_prompt=True)
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    P = len(prompt_ids)
    # the prompt ids are the ones a rollout of this prompt starts from
    assert example.input_ids[:P] == prompt_ids
    assert example.labels[:P] == [IGNORE] * P
    # every assistant token is a target, equal to its input id, and the target ends at the EOS
    assert example.labels[P:] == example.input_ids[P:]
    assert IGNORE not in example.labels[P:]
    assert example.labels[-1] == tok.eos_token_id
    assert tok.decode(example.labels[P:]) == ANSWER + "<|im_end|>"
    # the system message is inside the ignored prefix
    assert "careful solver" in tok.decode(example.input_ids[:P])


def test_prompt_logits_do_not_change_the_loss(tiny_tokenizer):
    example = encode_chat(_conversation(), tiny_tokenizer)
    batch = pad_batch([example], tiny_tokenizer.pad_token_id)
    labels_BL = batch["labels"]
    L, V = labels_BL.shape[1], len(tiny_tokenizer)
    g = torch.Generator().manual_seed(0)
    logits_BLV = torch.randn(1, L, V, generator=g)
    loss, count = masked_lm_loss(logits_BLV, labels_BL)
    assert count == example.num_targets
    # logits at position t predict token t + 1: those whose target is a prompt token must not matter
    prompt_target = torch.zeros(L, dtype=torch.bool)
    prompt_target[:-1] = labels_BL[0, 1:] == IGNORE
    prompt_target[-1] = True  # the last position predicts nothing
    perturbed = logits_BLV.clone()
    perturbed[0, prompt_target] += 100.0 * torch.randn(int(prompt_target.sum()), V, generator=g)
    loss2, _ = masked_lm_loss(perturbed, labels_BL)
    assert torch.equal(loss, loss2)
    # ... while any logit that predicts an assistant token does matter
    first_target = int((~prompt_target).nonzero()[0])
    perturbed[0, first_target] += 5.0 * torch.randn(V, generator=g)
    loss3, _ = masked_lm_loss(perturbed, labels_BL)
    assert not torch.allclose(loss, loss3)


def test_masked_loss_by_hand():
    # two positions predict targets: t=0 -> label[1]=2 (logits uniform over 4: ln 4), t=2 -> label[3]=1
    logits = torch.zeros(1, 4, 4)
    logits[0, 2, 1] = 10.0  # confident and right: ~0 loss
    labels = torch.tensor([[IGNORE, 2, IGNORE, 1]])
    loss, count = masked_lm_loss(logits, labels)
    assert count == 2
    expected = torch.log(torch.tensor(4.0)) + torch.log1p(3 * torch.exp(torch.tensor(-10.0)))
    assert torch.allclose(loss, expected, atol=1e-6)


def test_packing_gives_the_padded_loss(tiny_tokenizer, tiny_model):
    tok = tiny_tokenizer
    examples = [
        encode_chat(
            [
                {"role": "user", "content": user_message(SOLVER, problem=f"What is {a} + {b}?")},
                {
                    "role": "assistant",
                    "content": f"{a} + {b} = {a + b}, so \\boxed{{{a + b}}}." * (1 + a % 3),
                },
            ],
            tok,
        )
        for a, b in [(1, 2), (5, 9), (12, 3), (7, 7)]
    ]
    rows = pack_rows(examples, max_length=400)
    assert len(rows) < len(examples)  # something was actually packed
    tiny_model.eval()
    with torch.no_grad():
        padded = pad_batch(examples, tok.pad_token_id)
        labels = padded.pop("labels")
        loss_pad, n_pad = masked_lm_loss(tiny_model(**padded).logits, labels)
        packed = packed_batch(rows, tok.pad_token_id)
        labels = packed.pop("labels")
        loss_pack, n_pack = masked_lm_loss(tiny_model(**packed, use_cache=False).logits, labels)
    assert n_pad == n_pack == sum(e.num_targets for e in examples)
    assert torch.allclose(loss_pad, loss_pack, rtol=1e-5, atol=1e-4)
    # and the micro-batching helper packs the same way
    cfg = SFTConfig(packing=True, max_length=400, micro_batch_size=8)
    assert len(_micro_batches(examples, cfg, tok.pad_token_id)) == 1


def test_bad_data_lines_name_file_and_line(tmp_path):
    good = json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
    cases = {
        "not json": "not valid JSON",
        json.dumps({"messages": [{"role": "user", "content": "q"}]}): "prompt and an assistant turn",
        json.dumps(
            {"messages": [{"role": "user", "content": "q"}, {"role": "user", "content": "a"}]}
        ): "last message",
        json.dumps({"messages": [{"role": "user"}, {"role": "assistant", "content": "a"}]}): "string 'role'",
    }
    for bad, expected in cases.items():
        path = tmp_path / "data.jsonl"
        path.write_text(good + "\n" + bad + "\n")
        with pytest.raises(UserError) as err:
            read_chat_jsonl(path)
        assert f"{path} line 2" in str(err.value) and expected in str(err.value)
        assert "\n" not in str(err.value)
    assert len(read_chat_jsonl(_write(tmp_path / "ok.jsonl", good + "\n\n" + good + "\n"))) == 2


def _write(path, text):
    path.write_text(text)
    return path


def test_targets_end_at_the_end_of_turn_for_a_base_model_eos():
    # Qwen3-*-Base and Qwen2.5 tokenizers: EOS <|endoftext|>, ChatML turns end with <|im_end|>. The target
    # must end at <|im_end|> (where rollouts stop), not run on through "\n<|endoftext|>".
    from pasodoble.testing.tiny import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    tok.eos_token = "<|endoftext|>"
    example = encode_chat(_conversation(), tok)
    targets = [t for t in example.labels if t != IGNORE]
    assert targets[-1] == tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.decode(targets) == ANSWER + "<|im_end|>"
    assert tok.eos_token_id not in targets
