"""The baseline GPT and the hook points through which tricks change it.

    hooks        the hook points (typed), the trace-time ``Ctx``, the extras tricks share
    model        the baseline GPT-2, read top to bottom; the baseline's choice for each hook
    attention    the causal attention kernels (blocked matmuls on CPU, cuDNN on GPU, cached)
    optim        the baseline optimizer (AdamW, parameter groups) and lr schedule
    params       parameter paths and kinds (embedding, head, matrix, vector)
    batch_sizes  each step's batch size (the batch-size schedule) and the tokens seen before it

May import: speedrun.errors, speedrun.config. Nothing else of the harness: everything above
(tricks, training, inference, records) builds on this package.
"""
