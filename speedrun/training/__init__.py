"""The training engine: what every command that trains shares.

    plan           a run's configuration resolved, checked and prepared once (track, data,
                   hooks, validation set, fingerprints, environment), before anything compiles
    state          the initial parameters and optimizer state (train and bench share them)
    train          the timed loop of one seed: compile and warm up, train, validate, result
    accumulate     a step's gradient taken in microbatches (train.grad_accum), and their count
                   chosen from a device's memory
    remat          activation checkpointing of each block (train.remat)
    seed           one seed as a command runs it: speed probe, timed loop, log, summary line
    evaluate       the validation loss, during a run and of a saved model
    console        progress bar and log lines
    metrics        the metrics a person watches while a run trains (`run --log-to`:
                   TensorBoard, Weights & Biases)
    saving         a finished run kept: its record, its results file when the record cannot
                   be written (for `recover`), two linked records, its checkpoints
    resume         a run's whole training state kept every N steps, and continued from it
    interleave     configurations timed side by side on one machine, A B A B
    side_by_side   several seeds (and sweep points) trained as one vmapped program, untimed
    step_inputs    settings a step can take as inputs, so sweep points can share a program
    step_search    the search for the fewest steps that make a claim (`find-steps`)
    grid           a grid of settings: points, resuming from records, the paired table (`sweep`)
    time_reference the record a claim is timed against (`submit`)
    speed          step time, tokens/s, MFU, where the step goes; decode speed (`bench`)
    environment    what a run ran on: devices, hardware class, speed probe, versions, git
    compile_cache  the persistent compilation cache

The commands themselves (`run`, `find-steps`, `compare`, ...) are speedrun/commands/.

May import: every package below it, speedrun.errors, speedrun.config, speedrun.tracks,
speedrun.data, speedrun.core, speedrun.distributed, tricks, speedrun.records,
speedrun.inference.
"""
