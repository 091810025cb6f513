"""prepare_base: the real bundled GGUF converts to a loadable fp32 model; local dirs work; bad configs fail cleanly."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import SMOLLM2_CACHE, stage_args, stage_path

from saferinstruct.hashing import dir_sha256


def _run(load_stage, tmp_path, params: str):
    (tmp_path / "params.yaml").write_text(params)
    out, stats = (stage_path("prepare_base", tmp_path, opt) for opt in ("--out", "--stats"))
    res = CliRunner().invoke(load_stage("prepare_base").main, stage_args("prepare_base", tmp_path))
    return res, out, stats


def test_smollm2_conversion_is_a_plain_fp32_model(smollm2_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    info = json.loads((smollm2_dir / "model_info.json").read_text())
    assert 130e6 < info["parameters"] < 140e6
    assert info["source"]["kind"] == "bundled" and len(info["source"]["gguf_sha256"]) == 64
    assert info["weights_sha256"] == dir_sha256(smollm2_dir, "*.safetensors")
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "float32"
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir)
    assert model.dtype == torch.float32 and tok.pad_token is not None and tok.chat_template
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert "Paris" in tok.decode(out[0][ids["input_ids"].shape[1]:])  # dequantised weights still work


def test_stage_reuses_cached_conversion(load_stage, tmp_path, smollm2_dir):
    res, out, stats = _run(load_stage, tmp_path, f"prepare_base:\n  cache_dir: {SMOLLM2_CACHE}\n")
    assert res.exit_code == 0, res.output
    got = json.loads(stats.read_text())
    assert got["conversion_cache_hit"] is True and got["source"] == "bundled"
    assert (out / "model.safetensors").stat().st_size == (smollm2_dir / "model.safetensors").stat().st_size
    assert json.loads((out / "model_info.json").read_text())["weights_sha256"] == got["weights_sha256"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp dir left


def test_stage_local_dir(load_stage, tmp_path, tiny_model_dir):
    params = f"prepare_base:\n  policy:\n    source: local\n    path: {tiny_model_dir}\n"
    res, out, stats = _run(load_stage, tmp_path, params)
    assert res.exit_code == 0, res.output
    info = json.loads((out / "model_info.json").read_text())
    assert info["source"] == {"kind": "local", "path": str(tiny_model_dir)}
    assert info["parameters"] > 0 and (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert json.loads(stats.read_text())["conversion_cache_hit"] is False


@pytest.mark.parametrize(("params", "message"), [
    ("prepare_base:\n  policy:\n    source: hub\n    hub_id: HuggingFaceTB/SmolLM2-135M-Instruct\n", "pinned revision"),
    ("prepare_base:\n  policy:\n    source: local\n", "needs path"),
    ("prepare_base:\n  policy:\n    source: local\n    path: /nonexistent/model\n", "model directory not found"),
    ("prepare_base:\n  policy:\n    source: gguf\n    path: /nonexistent/m.gguf\n", "GGUF file not found"),
    ("prepare_base:\n  policy:\n    sorce: hub\n", "unknown key 'prepare_base.policy.sorce'"),
    ("prepare_base:\n  policy:\n    source: hub\n    hub_id: nobody/none\n    revision: abc123\n", "cannot load model"),
])
def test_bad_config_is_one_clean_line(load_stage, tmp_path, params, message):
    res, out, stats = _run(load_stage, tmp_path, params)
    assert res.exit_code == 2
    assert message in res.output and res.output.startswith("error: ") and "Traceback" not in res.output
    assert not out.exists() and not stats.exists()
    assert not (tmp_path / "models").exists() or not list((tmp_path / "models").iterdir())


def test_empty_local_dir_leaves_nothing(load_stage, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    res, out, _ = _run(load_stage, tmp_path, f"prepare_base:\n  policy:\n    source: local\n    path: {empty}\n")
    assert res.exit_code == 2 and "cannot load model" in res.output
    assert not out.exists() and not list(out.parent.iterdir())
