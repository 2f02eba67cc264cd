"""The commands of ``python -m speedrun``, one module each, named for the command (find-steps is
find_steps.py): its parser (``add_parser(subparsers)``, returning the command's parser) and its
``main(args) -> int``. Only argparse and the shared flags (flags.py) load at a command module's
top, so `--help` builds every parser without importing JAX; ``main`` imports what the command
runs. A command module is what the user invokes, in order: the work it orchestrates lives in
the packages below (training/, inference/, posttraining/, records/, audit/, data/), where other
commands and the tests reuse it. speedrun/cli.py lists the commands.

    flags        the flags several commands share
    data         build, download or check token shards
    run          a timed fixed-length run of every seed, and its record
    find_steps   the fewest steps that make a claim
    compare      two configurations interleaved on one machine
    submit       a claim timed beside the track's #1 on this machine, in one sitting
    sweep        a grid of settings, one record per point, paired by seed; resumes
    tricks       the tricks, or one with its settings
    tracks       the tracks, their targets, rules and baselines
    leaderboard  leaderboard.md from the records
    verify       every check a record must pass; --replay trains its seeds again
    recover      the record of a run whose record could not be written
    bench        step time, tokens/s, MFU, where the time goes; decode speed
    sample       text from a checkpoint
    eval         a checkpoint's val loss, HellaSwag, or a task's pass@k
    sft, rl      post-training on a task, from a checkpoint or on a track
    tasks        the post-training tasks
    chat         talk to a post-trained checkpoint
    quantize     a weight-only int8 copy of a checkpoint
    export       a checkpoint as a Hugging Face GPT-2 folder
    launch       a training command as N joined processes on this machine

May import: every package of the harness: speedrun.errors, speedrun.config, speedrun.tracks,
speedrun.data, speedrun.core, speedrun.distributed, tricks, speedrun.records,
speedrun.inference, speedrun.training, speedrun.posttraining, speedrun.audit.
"""
