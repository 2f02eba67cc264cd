"""Post-training: teaching a trained model a task, by supervised fine-tuning and by
reinforcement learning on verifiable rewards, and measuring how fast it learns.

    chat       the conversation format: special tokens per tokenizer, rendering, the loss mask
    tasks/     one file per task (examples and a verifiable scorer), and user JSONL conversations
    scoring    pass@1 and pass@k of a model on a task's held-out examples
    sft        supervised fine-tuning batches: conversations packed, loss on assistant tokens
    rl         on-policy policy gradient with a group-mean baseline (nanochat's): its batches
    objective  the losses both share: weighted next-token loss, per-token log-probabilities
    loop       the timed loop of one seed, sft and rl alike
    posttrain  a post-training run: start checkpoint and configuration (a track's, or a
               checkpoint's with a task), every seed, the record
    start/     the post-training tracks' start checkpoints (speedrun/tracks.py pins them)

The commands (`sft`, `rl`, `tasks`, `eval --task`, `chat`) are speedrun/commands/.

May import: speedrun.errors, speedrun.config, speedrun.data, speedrun.tracks, speedrun.core,
tricks, speedrun.distributed, speedrun.records, speedrun.inference, speedrun.training.
"""
