"""Post-training: teaching a trained model a task, by supervised fine-tuning and by
reinforcement learning on verifiable rewards, and measuring how fast it learns.

    chat       the conversation format: special tokens per tokenizer, rendering, the loss mask
    tasks/     one file per task (examples and a verifiable scorer), and user JSONL conversations
    scoring    pass@1 and pass@k of a model on a task's held-out examples
    sft        `sft`: fine-tune on a task's conversations, loss on assistant tokens only
    rl         `rl`: on-policy policy gradient with a group-mean baseline (nanochat's)
    tracks     post-training tracks: start checkpoint, task, held-out set, target accuracy
    commands   `tasks`, `eval --task`, `chat`

May import: speedrun.errors, speedrun.config, speedrun.data, speedrun.tracks, speedrun.core,
tricks, speedrun.distributed, speedrun.records, speedrun.inference, speedrun.training.
"""
