"""Loading a pre-trained base (a Hugging Face Hub id or a local folder) that fails fast.

huggingface_hub retries a request that cannot connect five times with backoff, and
transformers asks for several files, each with its own retries: offline, loading ``gpt2``
took about 45 s and printed a dozen "Retrying in 8s" warnings before one error. Even
``local_files_only=True`` does not keep transformers off the network (with peft installed it
asks the Hub for an ``adapter_config.json``, and building request headers fetches an agent
registry). So a Hub id is first looked up in the local cache with huggingface_hub's
``snapshot_download(local_files_only=True)``, which never connects, and a cached snapshot
is loaded as a plain folder: no network at all, and the same base (so the same adapter base
fingerprint) on every run. Only a model that is not cached makes the Hub be asked, once and
with a short timeout, whether it can serve it; if not, the training stops with one line
saying what to do instead.
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers import PreTrainedTokenizerBase as Tokenizer

from bot.base_models import is_local_path
from bot.errors import TrainingError, first_line

PROBE_TIMEOUT_SECONDS = 10.0
REMEDY = "train with --base-model tiny or a local model folder, or connect to the network"


def load_pretrained(base_model: str) -> tuple[PreTrainedModel, Tokenizer]:
    """The model and tokenizer of a local folder or Hub id; one-line TrainingError if not."""
    if is_local_path(base_model):
        return _load(str(Path(base_model).expanduser()), base_model)
    snapshot = cached_snapshot(base_model)
    if snapshot is not None:
        try:
            return _load(str(snapshot), base_model, incomplete_raises=True)
        except _Incomplete:
            pass  # a partial download: let the Hub complete it
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise TrainingError(
            f"base model '{base_model}' is not in the local Hugging Face cache and "
            f"HF_HUB_OFFLINE is set; {REMEDY}"
        )
    probe_hub(base_model)
    return _load(base_model, base_model)


def cached_snapshot(repo_id: str) -> Path | None:
    """The local cache's snapshot folder of ``repo_id`` at ``main``, found without network."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached, or not a valid repo id: either way, not here
        return None


def probe_hub(repo_id: str) -> None:
    """One request, no retries: can the Hub serve ``repo_id``? Raise TrainingError if not.

    The token, if any, is sent by hand: huggingface_hub's own header builder first fetches
    an agent registry from the same endpoint.
    """
    from huggingface_hub import constants, get_session, get_token

    url = f"{constants.ENDPOINT}/{repo_id}/resolve/main/config.json"
    token = get_token()
    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        response = get_session().head(
            url, headers=headers, timeout=PROBE_TIMEOUT_SECONDS, follow_redirects=False
        )
    except Exception as exc:  # any transport failure means the same thing here
        raise TrainingError(
            f"cannot download base model '{repo_id}': the Hugging Face Hub "
            f"({constants.ENDPOINT}) cannot be reached ({first_line(exc).rstrip('.')}); {REMEDY}"
        ) from None
    status = response.status_code
    if status in (401, 403, 404):
        raise TrainingError(
            f"the Hugging Face Hub has no model '{repo_id}' (HTTP {status}: a misspelt id, "
            "or a private or gated model needing HF_TOKEN); give another --base-model"
        )
    if status >= 400:
        raise TrainingError(
            f"cannot download base model '{repo_id}': the Hugging Face Hub answered "
            f"HTTP {status}; try again later, or {REMEDY}"
        )


class _Incomplete(Exception):
    pass


def _load(
    source: str, shown: str, *, incomplete_raises: bool = False
) -> tuple[PreTrainedModel, Tokenizer]:
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source)
    except OSError as exc:  # transformers' "a file is missing"
        if incomplete_raises:
            raise _Incomplete from exc
        raise TrainingError(_load_failure(shown, exc)) from None
    except Exception as exc:  # any loader failure is the user's choice of model to fix
        raise TrainingError(_load_failure(shown, exc)) from None
    return model, tokenizer


def _load_failure(base_model: str, exc: BaseException) -> str:
    reason = first_line(exc).rstrip(".:; ")
    if is_local_path(base_model):
        return f"cannot load base model from {base_model}: {reason}"
    return f"cannot load base model '{base_model}': {reason}"
