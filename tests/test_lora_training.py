"""``tweetlike train --method lora``: PEFT adapters on the shared tiny base, end to end on CPU.

One adapter is trained for the module (``adapter``); tests that change the store work on a
copy of it. The shared tiny base is built (and pre-trained) once per process.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from peft import AutoPeftModelForCausalLM, PeftModel
from training_support import SMALL_ACCOUNT, Workspace, store, train, write_config
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, set_seed
from transformers import pipeline as hf_pipeline

from bot.base_models import tiny_base_dir, weights_fingerprint
from bot.core.formatting import AI_LABEL
from bot.model_store import ModelStoreReader
from bot.training import publish
from bot.training.dataset import EOS
from bot.training.recipes import TINY_LORA


def metadata(ws: Workspace, name: str = "pip") -> dict:
    return json.loads((ws.models / name / "tweetlike.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("lora")
    ws = Workspace(root, write_config(root))
    store(ws.data, "pip", SMALL_ACCOUNT)
    code, _, err = train(ws, "pip", "--method", "lora", "--epochs", "2")
    assert code == 0, err
    return ws


@pytest.fixture
def copy(adapter: Workspace, tmp_path: Path) -> Workspace:
    root = tmp_path / "copy"
    shutil.copytree(adapter.root, root, symlinks=True)
    return Workspace(root, write_config(root))


def test_an_adapter_folder_holds_the_adapter_tokenizer_and_no_full_weights(
    adapter: Workspace,
) -> None:
    folder = adapter.models / "pip"
    files = {p.name for p in folder.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "generation_config.json"} <= files
    assert {"tokenizer.json", "README.md", "tweetlike.json", "novelty.bin"} <= files
    assert "model.safetensors" not in files and "config.json" not in files
    assert ModelStoreReader(adapter.models).get("pip").metadata.method == "lora"


def test_metadata_records_lora_the_base_as_given_and_the_base_fingerprint(
    adapter: Workspace,
) -> None:
    meta = metadata(adapter)
    assert (meta["method"], meta["base_model"]) == ("lora", "tiny")
    base = AutoModelForCausalLM.from_pretrained(tiny_base_dir(adapter.models))
    assert meta["base_fingerprint"] == weights_fingerprint(base)
    assert meta["hyperparameters"]["lora"] == {"rank": 8, "alpha": 16, "dropout": 0.05}
    assert meta["hyperparameters"]["learning_rate"] == TINY_LORA.learning_rate


def test_adapter_config_names_the_absolute_shared_base_folder(adapter: Workspace) -> None:
    config = json.loads((adapter.models / "pip" / "adapter_config.json").read_text("utf-8"))
    assert config["base_model_name_or_path"] == str(tiny_base_dir(adapter.models).resolve())
    assert config["r"] == 8 and config["fan_in_fan_out"] is True
    assert set(config["target_modules"]) == {"c_attn", "c_proj", "c_fc"}


def test_an_adapter_uses_the_shared_base_tokenizer(adapter: Workspace) -> None:
    own = AutoTokenizer.from_pretrained(adapter.models / "pip")
    base = AutoTokenizer.from_pretrained(tiny_base_dir(adapter.models))
    assert own.get_vocab() == base.get_vocab()


def test_an_adapter_loads_with_the_transformers_pipeline_and_generates(
    adapter: Workspace,
) -> None:
    folder = str(adapter.models / "pip")
    generator = hf_pipeline("text-generation", model=folder)
    set_seed(0)
    settings = GenerationConfig.from_pretrained(folder)
    text = generator("My dream is", generation_config=settings, max_new_tokens=12)[0]
    assert text["generated_text"].startswith("My dream is")
    assert settings.do_sample is True and settings.top_p == 0.95
    assert settings.prompt_prefix == EOS


def test_an_adapter_loads_with_peft_on_the_unchanged_base(adapter: Workspace) -> None:
    model = AutoPeftModelForCausalLM.from_pretrained(adapter.models / "pip")
    assert isinstance(model, PeftModel)
    base = AutoModelForCausalLM.from_pretrained(tiny_base_dir(adapter.models))
    assert weights_fingerprint(base) == metadata(adapter)["base_fingerprint"]


def test_a_lora_card_says_how_to_install_and_load_it_and_what_base_it_needs(
    adapter: Workspace,
) -> None:
    card = (adapter.models / "pip" / "README.md").read_text(encoding="utf-8")
    assert "pip install torch transformers peft" in card
    assert "pipeline('text-generation', model='models/pip')" in card
    assert "AutoPeftModelForCausalLM.from_pretrained('models/pip')" in card
    assert "LoRA adapter (rank 8, alpha 16" in card
    assert metadata(adapter)["base_fingerprint"] in card
    assert AI_LABEL in card and "GPT-2 and its base" not in card
    assert "shared `tiny` base" in card


def test_a_retrain_without_flags_keeps_the_recorded_method_and_base(copy: Workspace) -> None:
    write_config(copy.root, base_model="gpt2", method="full")  # what new models would get
    code, out, err = train(copy, "pip", "--epochs", "1")
    assert code == 0, err
    assert "LoRA adapter on base tiny" in out
    assert (metadata(copy)["method"], metadata(copy)["base_model"]) == ("lora", "tiny")
    assert len(publish.list_versions(copy.models, "pip")) == 2


def test_a_method_flag_retrains_an_adapter_as_a_full_model(copy: Workspace) -> None:
    code, _, err = train(copy, "pip", "--method", "full", "--epochs", "1")
    assert code == 0, err
    assert (metadata(copy)["method"], metadata(copy)["base_fingerprint"]) == ("full", None)
    assert (copy.models / "pip" / "model.safetensors").is_file()


def test_training_method_in_the_config_applies_to_a_new_model(copy: Workspace) -> None:
    write_config(copy.root, method="lora")
    store(copy.data, "zed", SMALL_ACCOUNT, first_id=5000)
    code, _, err = train(copy, "zed", "--epochs", "1")
    assert code == 0, err
    assert metadata(copy, "zed")["method"] == "lora"


def test_an_adapter_rolls_back_to_the_previous_version_which_still_loads(
    copy: Workspace,
) -> None:
    first = (copy.models / "pip").resolve()
    assert train(copy, "pip", "--epochs", "1")[0] == 0
    assert (copy.models / "pip").resolve() != first

    assert publish.rollback(copy.models, "pip") == first
    assert ModelStoreReader(copy.models).get("pip").path == first
    hf_pipeline("text-generation", model=str(copy.models / "pip"))


def test_lora_on_a_base_without_gpt2_projections_fails_in_one_line(
    copy: Workspace, tmp_path: Path
) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_base_dir(copy.models))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    base = tmp_path / "llama"
    LlamaForCausalLM(config).save_pretrained(base)
    tokenizer.save_pretrained(base)

    code, out, err = train(copy, "pip", "--method", "lora", "--base-model", str(base))

    assert code == 1 and out == ""
    last_line = err.splitlines()[-1]
    assert last_line.startswith("tweetlike: error: ") and err.count("tweetlike: error") == 1
    assert "c_attn" in last_line and "use --method full" in last_line
    assert "Traceback" not in err
