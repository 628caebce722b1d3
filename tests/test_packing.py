"""Pre-packed fp32 linear layers give the same outputs as the layers they replace."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.pytorch_utils import Conv1D

from bot.generation.packing import PackedLinear, can_pack, pack_linear_layers

pytestmark = pytest.mark.skipif(
    not can_pack(torch.device("cpu"), torch.float32), reason="torch built without oneDNN"
)


def test_packed_linear_matches_linear_and_conv1d() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(512, 768)
    conv = Conv1D(768, 512)
    x = torch.randn(3, 5, 512)
    with torch.inference_mode():
        assert torch.allclose(
            PackedLinear(linear.weight, linear.bias)(x), linear(x), atol=1e-5, rtol=1e-5
        )
        assert torch.allclose(
            PackedLinear(conv.weight.t(), conv.bias)(x), conv(x), atol=1e-5, rtol=1e-5
        )
        # a strided view (what logits_to_keep hands the output layer) works too
        assert torch.allclose(
            PackedLinear(linear.weight, None)(x[:, -1:, :]),
            x[:, -1:, :] @ linear.weight.t(),
            atol=1e-5,
            rtol=1e-5,
        )


def test_pack_linear_layers_keeps_the_model_s_outputs() -> None:
    torch.manual_seed(0)
    config = GPT2Config(n_embd=512, n_layer=1, n_head=8, vocab_size=600, n_positions=64)
    reference = GPT2LMHeadModel(config).eval()
    model = GPT2LMHeadModel(config).eval()
    model.load_state_dict(reference.state_dict())
    # c_attn, attn c_proj, c_fc, mlp c_proj and lm_head are 1 MiB or more; nothing else is
    assert pack_linear_layers(model) == 5
    assert isinstance(model.lm_head, PackedLinear)
    ids = torch.randint(0, 600, (2, 9))
    with torch.inference_mode():
        assert torch.allclose(model(ids).logits, reference(ids).logits, atol=1e-4, rtol=1e-4)


def test_small_layers_and_other_devices_and_dtypes_are_left_alone() -> None:
    model = nn.Sequential(nn.Linear(64, 64))
    assert pack_linear_layers(model) == 0
    assert isinstance(model[0], nn.Linear)
    assert not can_pack(torch.device("cpu"), torch.bfloat16)
    assert not can_pack(torch.device("meta"), torch.float32)
