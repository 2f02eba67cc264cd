"""Post-training: the chat format round-trips and masks only the assistant, tasks keep train and
held-out apart, `sft` and `rl` teach a real (tiny) model a real task, `eval --task` and `chat`
work from the command line, post-training tracks write records that verify, and bad input is one
line."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re

import jax
import numpy as np
import optax
import pytest

from helpers import one_line_error, tiny_model
from speedrun import cli, tracks
from speedrun.config import OptimConfig, PostConfig, RunConfig, TrainConfig
from speedrun.data import corpus, paths
from speedrun.data.shards import read_shard
from speedrun.errors import SpeedrunError
from speedrun.inference import checkpoint
from speedrun.posttraining import chat, loop, objective, rl, scoring, sft
from speedrun.posttraining import tasks as task_registry
from speedrun.posttraining.tasks import jsonl
from speedrun.posttraining.tasks.base import fingerprint, split_of
from speedrun.records import leaderboard, record, verify

CONVERSATION = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What is 2+2?"},
                {"role": "assistant", "content": "4"},
                {"role": "user", "content": "And 3+3?"},
                {"role": "assistant", "content": "6"}]


# --- the chat format --------------------------------------------------------------------------


@pytest.mark.parametrize("tokenizer, vocab", [("bytes", 256), ("gpt2", 50304)])
def test_render_round_trips_and_masks_only_the_assistant(tokenizer, vocab):
    ids, mask = chat.render(CONVERSATION, tokenizer, vocab)
    s = chat.specials(tokenizer, vocab)
    assert ids[0] == s.bos and len(ids) == len(mask)
    back = chat.parse(ids, tokenizer, vocab)
    assert back == chat.normalise(CONVERSATION)
    assert back[0]["content"] == "Be brief.\n\nWhat is 2+2?"  # system merged into the first turn
    trained = [int(t) for t, m in zip(ids, mask) if m]
    # exactly each assistant turn's text and its end token
    want = []
    for m in chat.normalise(CONVERSATION):
        if m["role"] == "assistant":
            want += [*chat.encode_text(m["content"], tokenizer), s.assistant_end]
    assert trained == want
    assert not any(m for t, m in zip(ids, mask) if t in (s.user_start, s.user_end,
                                                           s.assistant_start))


def test_a_prompt_is_primed_with_assistant_start():
    ids = chat.prompt(CONVERSATION[:2], "bytes", 256)
    assert ids[-1] == chat.SPECIALS["bytes"].assistant_start
    assert chat.completion([*b"42", chat.SPECIALS["bytes"].assistant_end, *b"junk"], "bytes",
                           256) == "42"


def test_the_byte_markers_never_occur_in_the_wiki_corpus(tmp_path):
    folder = corpus.build_wiki_bytes(tmp_path).directory
    for f in paths.split_files(folder, "wiki-bytes", "train") + paths.split_files(
            folder, "wiki-bytes", "val"):
        assert chat.check_corpus(read_shard(f), "bytes") == []
    assert chat.check_corpus(np.array([5, 1, 7]), "bytes") == [1]


@pytest.mark.parametrize("bad, message", [
    ([{"role": "assistant", "content": "hi"}], "alternate"),
    ([{"role": "user", "content": 3}], "content"),
    ([{"role": "robot", "content": "x"}], "role"),
    ([], "at least one user message"),
])
def test_bad_conversations_are_named(bad, message):
    with pytest.raises(SpeedrunError, match=message):
        chat.render(bad, "bytes", 256)


def test_a_vocabulary_that_cannot_carry_the_chat_tokens_is_refused():
    with pytest.raises(SpeedrunError, match="cannot carry the chat tokens"):
        chat.specials("gpt2", 50257)


# --- tasks ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["addition", "reverse", "count"])
def test_train_and_heldout_never_overlap_and_answers_score(name):
    task = task_registry.get(name)
    train = task.examples("train", 0, 300) + task.examples("train", 1, 300)
    held = task.examples("heldout", 0, 100) + task.examples("heldout", 5, 100)
    assert {e.key for e in train}.isdisjoint({e.key for e in held})
    assert all(split_of(e.key) == "heldout" for e in held)
    assert task.examples("heldout", 0, 100) == held[:100]  # a seed fixes the draw
    e = held[0]
    assert task.score(e.answer, e) == 1.0 and task.score(f" {e.answer}\n", e) == 1.0
    assert task.score(e.answer + "0", e) == 0.0
    assert len(e.answer.encode()) < task.max_new_tokens


def test_tasks_are_what_they_say():
    add = task_registry.get("addition").examples("train", 3, 50)
    for e in add:
        a, b = map(int, re.match(r"What is (\d+)\+(\d+)\?", e.question[-1]["content"]).groups())
        assert int(e.answer) == a + b
    for e in task_registry.get("reverse").examples("train", 3, 50):
        word = re.match(r"Spell (\w+) backward\.", e.question[-1]["content"]).group(1)
        assert e.answer == word[::-1]
    for e in task_registry.get("count").examples("train", 3, 50):
        letter, word = re.match(r"How many (\w) are in (\w+)\?", e.question[-1]["content"]).groups()
        assert int(e.answer) == word.count(letter)


def test_unknown_task_lists_the_tasks():
    with pytest.raises(SpeedrunError, match="unknown task 'adition'; did you mean addition"):
        task_registry.get("adition")


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) if not isinstance(r, str) else r for r in rows) + "\n")
    return path


def test_user_conversations_from_jsonl(tmp_path):
    rows = [{"messages": [{"role": "user", "content": f"Say {i}"},
                          {"role": "assistant", "content": str(i)}]} for i in range(60)]
    task = task_registry.get(f"jsonl:{write_jsonl(tmp_path / 'c.jsonl', rows)}")
    train, held = task.examples("train", 0, 1000), task.examples("heldout", 0, 1000)
    assert len(train) + len(held) == 60 and held
    assert {e.key for e in train}.isdisjoint({e.key for e in held})
    assert task.score("7", next(e for e in train + held if e.answer == "7")) == 1.0


@pytest.mark.parametrize("line, message", [
    ("not json", "line 2: not JSON"),
    ('{"text": "hello"}', "line 2: not a conversation"),
    ('{"messages": [{"role": "user", "content": "hi"}]}', "line 2: the conversation must end "
                                                          "with the assistant"),
    ('{"messages": ["hi", "there"]}', "line 2: message 0 must be {'role'"),
])
def test_a_bad_jsonl_line_is_named(tmp_path, line, message):
    good = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    f = write_jsonl(tmp_path / "c.jsonl", [good, line])
    with pytest.raises(SpeedrunError, match=message):
        jsonl.load(str(f))


def test_an_empty_heldout_split_is_one_line(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant",
                                                             "content": "a"}]}]
    task = jsonl.load(str(write_jsonl(tmp_path / "one.jsonl", rows)))
    empty = "heldout" if split_of(task.fixed[0].key) == "train" else "train"
    with pytest.raises(SpeedrunError, match=f"its {empty} split is empty"):
        task.examples(empty, 0, 5)


# --- the pieces of sft and rl ------------------------------------------------------------------


def test_sft_packs_whole_conversations_and_trains_only_answers():
    task = task_registry.get("addition")
    packer = sft.Packer(sft.stream(task, 0), "bytes", 256, 64)
    b = packer.batch(4)
    assert b["x"].shape == (4, 64) and b["y"].shape == (4, 64)
    assert np.array_equal(b["x"][:, 1:], b["y"][:, :-1])
    for x, y, w in zip(b["x"], b["y"], b["w"]):
        row = np.concatenate([x[:1], y])
        # whole conversations, each after the separator; the padding is separators alone
        convs = [c for c in np.split(row, np.flatnonzero(row == 0)[1:]) if len(c) > 1]
        parsed = [chat.parse(c, "bytes", 256) for c in convs]
        assert all(p[-1]["role"] == "assistant" for p in parsed)
        trained = y[w > 0]
        ends = int((trained == chat.SPECIALS["bytes"].assistant_end).sum())
        assert ends == len(parsed) and set(trained.tolist()) <= set(b"0123456789") | {4}


def test_advantages_are_reward_minus_the_group_mean():
    r = np.array([1, 0, 0, 1, 1, 1, 1, 1], np.float64)  # the second group: all right
    a = rl.advantages(r, 4, normalise=False)
    assert a.tolist() == [0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0]
    n = rl.advantages(r, 4, normalise=True)
    assert n[0] == pytest.approx(1.0, abs=1e-4) and n[4:].tolist() == [0, 0, 0, 0]


def test_rl_rows_train_the_answer_and_its_end_only():
    ids, mask = rl.rows([[0, 1, 9, 2, 3]], [[7, 8]], [True], end=4, pad=0, width=10)
    assert ids[0, :8].tolist() == [0, 1, 9, 2, 3, 7, 8, 4]
    assert mask[0].tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0]
    ids, mask = rl.rows([[0, 1, 9, 2, 3]], [[7, 8]], [False], end=4, pad=0, width=10)
    assert mask[0].sum() == 2  # no end token when the model never wrote it


def test_pass_at_k_is_the_unbiased_estimator():
    assert scoring.pass_at_k(8, 0, 4) == 0 and scoring.pass_at_k(8, 8, 4) == 1
    assert scoring.pass_at_k(8, 2, 1) == pytest.approx(0.25)
    assert scoring.pass_at_k(4, 1, 4) == 1.0


# --- the commands, end to end, on a tiny model -----------------------------------------------

YES = [{"messages": [{"role": "user", "content": f"Is {i} a number?"},
                     {"role": "assistant", "content": "yes"}]} for i in range(200)]
TINY = ("--set", "optim.lr=0.01", "--set", "train.batch_size=8", "--set", "post.seq_len=64",
        "--set", "post.heldout=10", "--quiet")


def start_checkpoint(tmp_path, **changes):
    """A tiny byte model, saved as `run --save` would, to post-train from."""
    m = tiny_model("rotary", jitter=0.0, seq_len=64, n_layer=2, **changes)
    path = tmp_path / "start.safetensors"
    checkpoint.save(path, m.params, m.cfg, m.tokenizer, 0)
    return path


@pytest.fixture
def yes_task(tmp_path):
    return f"jsonl:{write_jsonl(tmp_path / 'yes.jsonl', YES)}"


@pytest.fixture
def sft_saved(tmp_path, capsys, yes_task):
    """`sft` from a tiny start model on the yes task: what it printed, and the saved model."""
    start = start_checkpoint(tmp_path)
    assert cli.main(["sft", str(start), "--task", yes_task, "--steps", "30", "--set",
                     "train.eval_every=15", "--save", str(tmp_path / "out"), *TINY]) == 0
    (saved,) = (tmp_path / "out").glob("*.safetensors")
    return capsys.readouterr().out, saved


@pytest.mark.slow
def test_sft_teaches_a_tiny_model_a_task_and_saves_it(sft_saved, yes_task):
    out, saved = sft_saved
    assert re.search(r"seed 0: 30 steps in [\d.]+s train time, held-out pass@1 1\.0000 \(from "
                     r"0\.0000", out), out
    ck = checkpoint.load(saved)
    assert ck.cfg.post.method == "sft" and ck.cfg.post.task == yes_task


@pytest.mark.slow
def test_eval_task_and_chat_read_a_post_trained_model(sft_saved, capsys, yes_task, monkeypatch):
    _, saved = sft_saved
    assert cli.main(["eval", str(saved), "--task", yes_task, "--n", "10", "--k", "4"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"greedy pass@1 1\.0000 ± 0\.0000 over 10 held-out examples", out), out
    assert re.search(r"sampled \(temperature 1\.0\) pass@1 [\d.]+ ± [\d.]+, pass@4 [\d.]+ ± [\d.]+",
                     out), out
    # a line holding a chat marker (control byte 1) is refused, and the chat goes on
    monkeypatch.setattr("sys.stdin", io.StringIO("Is 7 a number?\n\nIs \x01 one?\nIs 9 a number?\n"))
    assert cli.main(["chat", str(saved)]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == ["yes", "yes"] and "(not sent: the text holds control byte(s) [1]" in err


def test_a_policy_gradient_step_moves_probability_toward_the_rewarded_answer():
    """One SGD step on the rl loss raises log p of an answer with positive advantage and lowers
    it for one with negative advantage (the sign of REINFORCE)."""
    m = tiny_model("", seq_len=16, n_layer=2)
    cfg = dataclasses.replace(m.cfg, post=PostConfig(method="rl", samples=2, seq_len=8),
                              train=dataclasses.replace(m.cfg.train, batch_size=2, loss_chunk=16))
    ids, mask = rl.rows([[0, 1, 65, 2, 3], [0, 1, 65, 2, 3]], [[89], [78]], [True, True], 4, 0, 8)
    adv = rl.advantages(np.array([1.0, 0.0]), 2, normalise=False)
    b = loop.as_batch(ids[:, :-1], ids[:, 1:], adv[:, None] * mask[:, 1:], mask[:, 1:])
    step = jax.jit(loop.make_step(cfg, m.hooks, optax.sgd(0.5)))
    before = objective.token_logprobs(m.params, b["x"], b["y"], cfg, m.hooks)
    params, _, _ = step(m.params, optax.sgd(0.5).init(m.params), b)
    after = objective.token_logprobs(params, b["x"], b["y"], cfg, m.hooks)
    answer = 5 - 1  # the target position of each answer's first token
    assert after[0, answer] > before[0, answer] and after[1, answer] < before[1, answer]


@pytest.mark.slow
def test_rl_runs_from_the_command_line_and_logs_its_reward(tmp_path, capsys, yes_task):
    start = start_checkpoint(tmp_path)
    assert cli.main(["rl", str(start), "--task", yes_task, "--steps", "2", "--set",
                     "post.samples=4", "--set", "post.seq_len=32", "--set", "train.eval_every=2",
                     "--set", "train.log_every=1", *TINY[:4], "--set", "post.heldout=10"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"step:2/2 train_loss:\S+ .*mean_reward:[\d.]+ prompts_solved:[\d.]+", out), out


@pytest.mark.parametrize("extra, message", [
    (("--task", "adition"), "unknown task 'adition'"),
    (("--task", "addition", "--set", "post.samples=1"), "post.samples must be at least 2"),
])
def test_rl_bad_input_is_one_line(tmp_path, capsys, extra, message):
    start = start_checkpoint(tmp_path)
    assert cli.main(["rl", str(start), *extra, "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_conversations_a_model_cannot_read_are_one_line_before_compiling(tmp_path, capsys,
                                                                         monkeypatch):
    """A jsonl line of the wrong shape, and held-out prompts longer than the model's context,
    are known from the text: one line, before the step (or generation) compiles."""
    start = start_checkpoint(tmp_path)  # a 64-token context
    monkeypatch.setattr(loop, "run", lambda *a, **k: pytest.fail("compiled"))
    monkeypatch.setattr(scoring, "score", lambda *a, **k: pytest.fail("compiled"))
    shape = write_jsonl(tmp_path / "shape.jsonl", [{"messages": ["hi", "there"]}])
    long = write_jsonl(tmp_path / "long.jsonl", [
        {"messages": [{"role": "user", "content": f"{i} " + "x" * 100},
                      {"role": "assistant", "content": "y"}]} for i in range(20)])
    for method in ("sft", "rl"):
        assert cli.main([method, str(start), "--task", f"jsonl:{shape}", "--quiet"]) == 1
        one_line_error(capsys, "shape.jsonl, line 1: message 0 must be")
        assert cli.main([method, str(start), "--task", f"jsonl:{long}", *TINY]) == 1
        one_line_error(capsys, "a held-out prompt is 1", "reads at most 64 (model.seq_len)")
    assert cli.main(["eval", str(start), "--task", f"jsonl:{long}", "--n", "2"]) == 1
    one_line_error(capsys, "reads at most 64")


def test_a_checkpoint_that_cannot_carry_the_chat_tokens_is_one_line(tmp_path, capsys):
    start = start_checkpoint(tmp_path, vocab=50257)  # gpt2 ids, unpadded: no room past 50256
    ck = checkpoint.load(start)
    checkpoint.save(start, ck.params, ck.cfg, "gpt2", 0)
    assert cli.main(["sft", str(start), "--task", "addition", "--quiet"]) == 1
    assert "cannot carry the chat tokens" in capsys.readouterr().err


@pytest.mark.slow
def test_a_post_training_track_writes_records_that_verify_and_rank(tmp_path, capsys, monkeypatch,
                                                                   yes_task):
    """A track fixes the start checkpoint, task, held-out set and target; its records are timed
    claims tested on the held-out accuracy, and the leaderboard ranks them in a section of
    their own."""
    start = start_checkpoint(tmp_path)
    ck = checkpoint.load(start)
    task = task_registry.get(yes_task)
    sha = hashlib.sha256(start.read_bytes()).hexdigest()
    track = tracks.Track(
        name="unit-sft", dataset="wiki-bytes", summary="a yes task", where="tests",
        data_command="-", start=start.name,
        config=RunConfig(track="unit-sft", model=ck.cfg.model, optim=OptimConfig(lr=0.01),
                         train=TrainConfig(batch_size=8, steps=30, eval_every=15, val_tokens=10,
                                           target=0.6, loss_chunk=64, log_every=10),
                         tricks=ck.cfg.tricks,
                         post=PostConfig(method="sft", task=yes_task, start_sha256=sha,
                                         seq_len=64, heldout=10)),
        rules=tracks.Rules(target=0.6, val_tokens=10, tokenizer="bytes", vocab=256,
                           val_sha256=fingerprint(task.examples("heldout", 0, 10)),
                           train_sha256=fingerprint(task.examples("train", 0, 256)),
                           start_sha256=sha))
    monkeypatch.setitem(tracks.TRACKS, "unit-sft", track)
    monkeypatch.setattr(tracks, "POST_START_DIR", tmp_path)
    records_dir = tmp_path / "records"
    assert cli.main(["sft", "--track", "unit-sft", "--seeds", "3", "--quiet", "--records-dir",
                     str(records_dir)]) == 0
    (folder,) = [p.parent for p in records_dir.rglob("record.yaml")]
    rec = record.load_record(folder)
    assert verify.verify(folder) == []
    # every seed answers all 10 held-out examples: identical accuracies are evidence here
    assert rec["summary"]["claim"], rec["summary"]
    assert rec["summary"]["p_value"] == pytest.approx(0.4 ** 10, abs=1e-8)  # binomial: 10 of 10
    assert rec["name"] == "sft-yes"
    text = leaderboard.render(records_dir, leaderboard.load_all(records_dir))
    assert "A post-training track: *final val loss* is the held-out error" in text
    # another start checkpoint is refused, naming the rule
    (tmp_path / "other").mkdir()
    m = tiny_model("rotary", seed=1, seq_len=64, n_layer=2)  # same shape, other weights
    checkpoint.save(tmp_path / "other" / start.name, m.params, ck.cfg, "bytes", 0)
    monkeypatch.setattr(tracks, "POST_START_DIR", tmp_path / "other")
    assert cli.main(["sft", "--track", "unit-sft", "--quiet"]) == 1
    assert "is not unit-sft's start checkpoint" in capsys.readouterr().err
