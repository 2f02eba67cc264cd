"""speedrun: a pure-JAX harness for the GPT training speedrun.

Train a GPT to a fixed validation loss as fast as possible, where every idea is a
named, composable trick (see tricks/). Entry point: ``python -m speedrun``.
"""

__version__ = "0.1.0"
