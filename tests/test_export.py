"""`export --format hf`: the exported folder read back by a NumPy GPT-2 written from the Hugging
Face layout (config.json's fields, GPT-2's tensor names, Conv1D's (in, out) weights, the tied
head), never by our model, gives our logits; GPT-2's tokenizer files for GPT-2-token models and
none for byte-level ones; every registered trick either exports or is named in the refusal."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file

import tricks
from helpers import one_line_error, sweep, tiny_cfg, tiny_checkpoint
from speedrun import cli
from speedrun.data import tokenizer
from speedrun.inference import checkpoint
from speedrun.inference import hf_gpt2 as export
from speedrun.inference import generate as G

# Tricks that change only how the model is trained (optimizer, schedule, data, initialisation,
# training loss, compute dtype): GPT-2 as it is. Every other registered trick must be refused.
TRAINING_ONLY = {"muon", "wsd-schedule", "momentum-warmup", "normuon", "polar-express",
                 "cautious-wd", "batch-schedule", "zero-init", "bf16", "mtp", "fp8-head"}


def hf_gpt2_logits(folder, ids) -> np.ndarray:
    """GPT2LMHeadModel's forward pass in float64 NumPy, from the folder's files alone."""
    c = json.loads((folder / "config.json").read_text())
    w = {k: v.astype(np.float64) for k, v in load_file(folder / "model.safetensors").items()}
    T, D, H = len(ids), c["n_embd"], c["n_head"]
    hd = D // H

    def ln(x, name):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + c["layer_norm_epsilon"]) * w[name + ".weight"] \
            + w[name + ".bias"]

    def conv1d(x, name):  # transformers' Conv1D: weight (in, out)
        return x @ w[name + ".weight"] + w[name + ".bias"]

    def gelu_new(x):
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))

    assert c["activation_function"] == "gelu_new" and c["tie_word_embeddings"]
    x = w["transformer.wte.weight"][ids] + w["transformer.wpe.weight"][:T]
    causal = np.tril(np.ones((T, T), bool))
    for i in range(c["n_layer"]):
        p = f"transformer.h.{i}."
        q, k, v = np.split(conv1d(ln(x, p + "ln_1"), p + "attn.c_attn"), 3, axis=-1)
        q, k, v = (a.reshape(T, H, hd).transpose(1, 0, 2) for a in (q, k, v))
        s = np.where(causal, q @ k.transpose(0, 2, 1) / math.sqrt(hd), -np.inf)
        s = np.exp(s - s.max(-1, keepdims=True))
        y = (s / s.sum(-1, keepdims=True)) @ v
        x = x + conv1d(y.transpose(1, 0, 2).reshape(T, D), p + "attn.c_proj")
        x = x + conv1d(gelu_new(conv1d(ln(x, p + "ln_2"), p + "mlp.c_fc")), p + "mlp.c_proj")
    return ln(x, "transformer.ln_f") @ w["transformer.wte.weight"].T  # the head tied to wte


def our_logits(m: G.Model, ids) -> np.ndarray:
    return np.asarray(G.full_logits(m, m.params, jnp.asarray([ids], jnp.int32)))[0]


def assert_same_logits(folder, m: G.Model, vocab: int):
    ids = list(np.random.default_rng(0).integers(0, vocab, m.seq_len))
    theirs, ours = hf_gpt2_logits(folder, ids), our_logits(m, ids)
    assert theirs.shape == (m.seq_len, vocab)
    np.testing.assert_allclose(theirs, ours[:, :vocab], rtol=0, atol=1e-4)


@pytest.mark.parametrize("tok, vocab", sweep([("bytes", 256), ("gpt2", 50257)], unpack=True))
def test_numpy_gpt2_reads_the_export_and_gives_our_logits(tmp_path, capsys, tok, vocab):
    path, m = tiny_checkpoint(tmp_path / "m.safetensors", tokenizer=tok)
    out = tmp_path / "hf"
    assert cli.main(["export", str(path), "--format", "hf", str(out)]) == 0
    said = capsys.readouterr().out
    assert_same_logits(out, m, vocab)
    c = json.loads((out / "config.json").read_text())
    assert (c["vocab_size"], c["n_positions"], c["n_layer"], c["n_head"], c["n_embd"]) == \
        (vocab, m.seq_len, 4, 4, 32)
    assert c["model_type"] == "gpt2" and c["architectures"] == ["GPT2LMHeadModel"]
    assert c["bos_token_id"] == c["eos_token_id"] == (50256 if tok == "gpt2" else 0)
    with safe_open(str(out / "model.safetensors"), framework="numpy") as f:
        assert f.metadata() == {"format": "pt"}  # transformers refuses a file without it
        assert "lm_head.weight" not in f.keys() and len(list(f.keys())) == 4 + 4 * 12
    if tok == "gpt2":
        assert "vocab_size 50257 (cut from the model's padded 50304)" in said
        pinned = {f.name: f.sha256 for f in tokenizer.FILES}
        for name, ours in export.TOKENIZER_FILES.items():
            assert hashlib.sha256((out / name).read_bytes()).hexdigest() == pinned[ours]
        assert json.loads((out / "vocab.json").read_text())["<|endoftext|>"] == 50256
        assert (out / "merges.txt").read_text().startswith("#version: 0.2")
        assert json.loads((out / "tokenizer_config.json").read_text())["model_max_length"] == \
            m.seq_len
    else:
        assert "no tokenizer files" in said
        assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]


def test_byte_level_with_gpt2_tokenizer_and_an_existing_folder_are_refused(tmp_path, capsys):
    gpt2, _ = tiny_checkpoint(tmp_path / "g.safetensors", tokenizer="gpt2")
    byte, m = tiny_checkpoint(tmp_path / "b.safetensors", tokenizer="bytes", seed=1)
    out = tmp_path / "hf"
    assert cli.main(["export", str(byte), str(out), "--tokenizer", "gpt2"]) == 1
    one_line_error(capsys, str(byte), "not GPT-2 tokens", "without --tokenizer gpt2")
    assert not out.exists()
    assert cli.main(["export", str(gpt2), str(out)]) == 0
    capsys.readouterr()
    before = (out / "model.safetensors").read_bytes()
    assert cli.main(["export", str(byte), str(out)]) == 1
    one_line_error(capsys, str(out), "already exists", "--force")
    assert (out / "model.safetensors").read_bytes() == before  # nothing touched
    assert cli.main(["export", str(byte), str(out), "--force"]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert_same_logits(out, m, 256)
    (tmp_path / "file").write_text("x")
    assert cli.main(["export", str(byte), str(tmp_path / "file")]) == 1
    one_line_error(capsys, "is a file")
    assert cli.main(["export", str(byte), str(tmp_path / "file" / "out")]) == 1  # a file above
    one_line_error(capsys, f"export folder {tmp_path / 'file' / 'out'} cannot be used: "
                   f"{tmp_path / 'file'} is not a folder")


def configured(names):
    cfg = tricks.with_tricks(tiny_cfg(), list(names))
    return tricks.configure(cfg)


def test_every_trick_exports_or_is_named_in_the_refusal():
    registry = tricks.available()
    exportable = set()
    for name, t in registry.items():
        found = export.problems(configured([name, *t.requires]))
        if not found:
            exportable.add(name)
        else:
            assert any(p.startswith(name + " (") for p in found), (name, found)
            assert not any(p.startswith(r + " (") for r in t.requires for p in found), found
    assert exportable == TRAINING_ONLY


@pytest.mark.parametrize("name", sweep(sorted(TRAINING_ONLY)))
def test_a_model_trained_with_a_training_only_trick_exports_exactly(tmp_path, capsys, name):
    names = ",".join([name, *tricks.available()[name].requires])
    path, m = tiny_checkpoint(tmp_path / "m.safetensors", names)
    assert cli.main(["export", str(path), str(tmp_path / "hf")]) == 0
    capsys.readouterr()
    if name == "bf16":  # our forward pass computes in bfloat16: the export is its float32 one
        ids = list(range(m.seq_len))
        theirs, ours = hf_gpt2_logits(tmp_path / "hf", ids), our_logits(m, ids)
        assert np.max(np.abs(theirs - ours)) <= 5e-2 * (1 + np.max(np.abs(ours)))
        cfg = dataclasses.replace(m.cfg, tricks={})
        m = G.Model(m.params, cfg, tricks.build_hooks(cfg), m.tokenizer)
    assert_same_logits(tmp_path / "hf", m, 256)


def test_the_refusal_names_the_tricks_that_change_the_architecture(tmp_path, capsys):
    path, _ = tiny_checkpoint(tmp_path / "m.safetensors", "rotary,muon,gqa")
    assert cli.main(["export", str(path), str(tmp_path / "hf")]) == 1
    err = one_line_error(capsys, "cannot be exported as a Hugging Face GPT-2",
                         "rotary (changes the", "gqa (", "its other tricks (muon) would export")
    assert "muon (" not in err and not (tmp_path / "hf").exists()
    cfg = configured([])
    grouped = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, n_kv_head=2))
    assert export.problems(grouped) == ["model.n_kv_head=2 (GPT-2 has one key/value head per "
                                        "query head)"]


def test_an_int8_checkpoint_exports_its_dequantized_weights(tmp_path, capsys):
    path, _ = tiny_checkpoint(tmp_path / "m.safetensors")
    assert cli.main(["quantize", str(path)]) == 0
    q = checkpoint.load(tmp_path / "m.int8.safetensors")
    assert cli.main(["export", str(q.path), str(tmp_path / "hf")]) == 0
    assert "int8 weights written dequantized to float32" in capsys.readouterr().out
    assert_same_logits(tmp_path / "hf", q.model(), 256)  # the int8 model's own logits
