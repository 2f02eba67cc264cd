"""Running over many devices and processes: the device mesh, batch and parameter sharding.

    devices   the mesh (one data axis over every device of every process), batches split on
              it, joining a multi-process run
    sharding  where parameters and optimizer state live (train.sharding: dp, fsdp), one table
              from parameter kind to PartitionSpec
    launch    N joined processes on this machine, with simulated CPU devices (`launch`)

May import: speedrun.errors, speedrun.config, speedrun.core.
"""
