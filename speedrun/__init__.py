"""speedrun: a pure-JAX harness for the GPT training speedrun.

Train a GPT to a fixed validation loss as fast as possible, where every idea is a named,
composable trick (see tricks/). Entry point: ``python -m speedrun`` (cli.py).

The harness in layers, each importing only from the layers before it (every package's
docstring says what it may import; tests/test_architecture.py holds the code to it):

    errors, config   the one user-facing error; the frozen run configuration
    data/            token shards, tokenizers, the offline corpora, the batch loader
    tracks           what a record is compared on: data, target, rules, baseline config
    core/            the baseline GPT and its hook points, the baseline optimizer
    tricks/          (beside speedrun/) one file per trick, and their registry
    distributed/     devices, meshes, batch and parameter sharding
    records/         the record format, logs, verify, sittings, the time scale, the leaderboard
    inference/       checkpoints, int8 weights, KV-cache decoding, sampling, HellaSwag, export
    training/        the training engine: plans, the timed loop, evaluation, saving runs
    posttraining/    chat format, tasks, sft and rl, their timed loop and scoring
    audit/           the checks of a record that run its model: step 0, replay
    commands/        one module per command: its parser and its main
    cli              the command line: the list of commands

May import: nothing (this file only names the layers).
"""

__version__ = "0.1.0"
