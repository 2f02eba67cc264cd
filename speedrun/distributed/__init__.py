"""Running over many devices and processes: the device mesh, batch and parameter sharding.

    devices  the mesh (one data axis over every device), batches sharded on it, joining a
             multi-process run

May import: speedrun.errors, speedrun.config, speedrun.core.
"""
