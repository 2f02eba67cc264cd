"""Checkpoints (`run --save`), `eval` and `quantize`: exact round trips, clear errors for
damaged or mismatched files, and the evaluation of a saved (and an int8) model against the
record of the run that trained it. A tiny model on the tiny synthetic track, seconds each."""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path

import jax
import numpy as np
import pytest
import yaml

import tricks
from helpers import TINY
from speedrun import cli
from speedrun.config import config_hash
from speedrun.core import params as P
from speedrun.errors import SpeedrunError
from speedrun.inference import checkpoint
from speedrun.inference import quantize as Q


def model_of(names: str = "", seed: int = 0):
    cfg = tricks.configure(tricks.with_tricks(TINY.config, tricks.parse_names(names)))
    params = tricks.build_hooks(cfg).init(jax.random.PRNGKey(seed), cfg.model)
    return cfg, params


def leaves(params):
    return jax.tree_util.tree_leaves_with_path(params, is_leaf=Q.is_int8)


@pytest.mark.parametrize("names", ["", "rotary,untie-head,value-embeds,unet-skips,rmsnorm"])
def test_round_trip_is_exact(tmp_path, names):
    cfg, params = model_of(names)
    path = checkpoint.save(tmp_path / "m.safetensors", params, cfg, "gpt2", seed=3)
    ck = checkpoint.load(path)
    assert ck.cfg == tricks.canonical(cfg) and ck.tokenizer == "gpt2" and ck.seed == 3
    assert path.stat().st_mode & 0o044 == 0o044  # shareable like the data, not mkstemp's 0600
    assert jax.tree_util.tree_structure(ck.params) == jax.tree_util.tree_structure(params)
    for (pa, a), (pb, b) in zip(leaves(params), leaves(ck.params)):
        assert pa == pb and np.asarray(a).dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), b)
    # int8: the int8 tensors and scales come back bit for bit
    q = Q.quantize(params)
    ck8 = checkpoint.load(checkpoint.save(tmp_path / "q.safetensors", q, cfg, "gpt2"))
    assert ck8.quantization == "int8"
    for (_, a), (_, b) in zip(leaves(q), leaves(ck8.params)):
        assert Q.is_int8(a) == Q.is_int8(b)
        if Q.is_int8(a):
            np.testing.assert_array_equal(a.q, b.q)
            np.testing.assert_array_equal(a.scale, b.scale)


def test_a_folder_with_one_checkpoint_is_that_checkpoint(tmp_path):
    cfg, params = model_of()
    path = checkpoint.save(tmp_path / "only.safetensors", params, cfg, "gpt2")
    assert checkpoint.load(tmp_path).path == path
    checkpoint.save(tmp_path / "second.safetensors", params, cfg, "gpt2")
    with pytest.raises(SpeedrunError, match="holds 2 checkpoints"):
        checkpoint.load(tmp_path)


def test_truncated_file_is_one_clear_error(tmp_path):
    cfg, params = model_of()
    path = checkpoint.save(tmp_path / "m.safetensors", params, cfg, "gpt2")
    data = path.read_bytes()
    for cut in (len(data) - 100, 50, 4):
        path.write_bytes(data[:cut])
        with pytest.raises(SpeedrunError) as e:
            checkpoint.load(path)
        msg = str(e.value)
        assert str(path) in msg and "\n" not in msg
        assert "truncated" in msg or "not a readable" in msg or "header" in msg


def rewrite_metadata(path: Path, change) -> None:
    """Edit a safetensors file's metadata in place (header JSON), keeping the tensors."""
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8: 8 + n])
    change(header["__metadata__"])
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data[8 + n:])


def test_config_mismatch_is_one_clear_error(tmp_path):
    cfg, params = model_of()
    path = checkpoint.save(tmp_path / "m.safetensors", params, cfg, "gpt2")

    def edit_config(meta):  # a config edited without its hash: refused
        c = json.loads(meta["config"])
        c["model"]["d_model"] = 64
        meta["config"] = json.dumps(c)

    rewrite_metadata(path, edit_config)
    with pytest.raises(SpeedrunError, match="does not match its config_hash"):
        checkpoint.load(path)

    # a consistent config that does not fit the tensors: the shape check names the tensor
    big = tricks.configure(tricks.with_tricks(TINY.config, []))
    big = dataclasses.replace(big, model=dataclasses.replace(big.model, d_model=64))
    path = checkpoint.save(tmp_path / "m.safetensors", params, cfg, "gpt2")
    rewrite_metadata(path, lambda m: m.update(config=json.dumps(big.to_dict()),
                                               config_hash=config_hash(big)))
    with pytest.raises(SpeedrunError, match=r"tensor \S+ is float32\[.*\], its config needs"):
        checkpoint.load(path)

    # a tensor the config needs is missing (a trick added to the config)
    rot = tricks.configure(tricks.with_tricks(TINY.config, ["untie-head"]))
    path = checkpoint.save(tmp_path / "m.safetensors", params, cfg, "gpt2")
    rewrite_metadata(path, lambda m: m.update(config=json.dumps(rot.to_dict()),
                                               config_hash=config_hash(rot)))
    with pytest.raises(SpeedrunError, match="missing tensor.*lm_head"):
        checkpoint.load(path)


def test_quantize_error_bounds_per_matrix():
    _, params = model_of("untie-head,value-embeds")
    params = jax.tree_util.tree_map(lambda x: x + 0.1 * np.random.default_rng(0).standard_normal(
        x.shape).astype(np.float32), params)
    q = Q.quantize(params)
    flat = dict((k, v) for k, v in ((jax.tree_util.keystr(p), x) for p, x in leaves(q)))
    n_int8 = 0
    for path, w in jax.tree_util.tree_leaves_with_path(params):
        x = flat[jax.tree_util.keystr(path)]
        w = np.asarray(w)
        if w.ndim != 2:
            assert not Q.is_int8(x)
            continue
        n_int8 += 1
        assert Q.is_int8(x) and x.q.dtype == np.int8
        name = P.path_name(path)
        axis = Q.channel_axis(name, w)
        # per output channel: scale is 1 along the reduced axis, one per channel along the other
        assert x.scale.shape[axis] == 1 and x.scale.shape[1 - axis] == w.shape[1 - axis]
        err = np.abs(w - np.asarray(x.dequantize()))
        assert np.all(err <= x.scale / 2 + 1e-7), name  # half a step, channel by channel
        assert np.max(np.abs(x.q)) == 127  # every channel's largest weight uses the full range
    assert n_int8 >= 10
    assert max(Q.errors(params, q).values()) <= 1 / 254 + 1e-6


@pytest.mark.slow
def test_run_save_then_eval_reproduces_the_record_and_int8_stays_close(tiny, capsys):
    records_dir, save = tiny / "records", tiny / "ckpt"
    assert cli.main(["run", "--track", "tiny", "--records-dir", str(records_dir), "--quiet",
                     "--steps", "30", "--save", str(save)]) == 0
    out = capsys.readouterr().out
    files = sorted(save.glob("*.safetensors"))
    assert len(files) == 1 and f"checkpoint written: {files[0]}" in out
    assert not list(records_dir.rglob("*.safetensors"))  # model files never go into records/
    rec = yaml.safe_load(next(records_dir.rglob("record.yaml")).read_text())
    final = rec["runs"][0]["final_val_loss"]

    assert cli.main(["eval", str(files[0])]) == 0
    line = capsys.readouterr().out
    got = float(line.split("val loss ")[1].split()[0])
    assert got == pytest.approx(final, abs=2e-6), line  # the very parameters the record scored

    assert cli.main(["quantize", str(files[0])]) == 0
    assert "int8 checkpoint written" in capsys.readouterr().out
    q = save / files[0].name.replace(".safetensors", ".int8.safetensors")
    assert q.stat().st_size < files[0].stat().st_size / 2.5
    assert cli.main(["eval", str(q)]) == 0
    got8 = float(capsys.readouterr().out.split("val loss ")[1].split()[0])
    assert abs(got8 - final) < 0.02, (got8, final)  # int8 stays within 0.02 nats of the float model

    # sample: batched prompts from a file, from the float and the int8 model, and speculative
    prompts = tiny / "prompts.txt"
    prompts.write_text("12 7\n\n3\n")
    assert cli.main(["sample", str(files[0]), "--prompt-file", str(prompts),
                     "--max-new-tokens", "5", "--temperature", "0"]) == 0
    out = capsys.readouterr()
    texts = out.out.split("-" * 40 + "\n")
    assert len(texts) == 2 and texts[0].startswith("12 7") and texts[1].startswith("3")
    assert "2 prompt(s)" in out.err
    assert cli.main(["sample", str(q), "--prompt", "12", "--max-new-tokens", "5"]) == 0
    assert cli.main(["sample", str(files[0]), "--draft", str(q), "--draft-tokens", "2",
                     "--prompt", "12 7", "--max-new-tokens", "6", "--temperature", "0"]) == 0
    assert "draft acceptance" in capsys.readouterr().err


def test_save_inside_records_is_refused_before_training(tiny, capsys):
    rc = cli.main(["run", "--track", "tiny", "--records-dir", str(tiny / "records"), "--quiet",
                   "--steps", "2", "--save", str(tiny / "records" / "models")])
    assert rc == 1
    assert "model files do not go into records/" in capsys.readouterr().err
    assert not (tiny / "records").exists() or not list((tiny / "records").rglob("*.yaml"))


def test_quantize_refuses_int8_input_and_missing_files(tmp_path, capsys):
    cfg, params = model_of()
    path = checkpoint.save(tmp_path / "m.int8.safetensors", Q.quantize(params), cfg, "gpt2")
    assert cli.main(["quantize", str(path)]) == 1
    assert "already int8" in capsys.readouterr().err
    assert cli.main(["eval", str(tmp_path / "nope.safetensors")]) == 1
    assert "no such checkpoint" in capsys.readouterr().err
