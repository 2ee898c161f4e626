"""recmtl: multi-task training for recommender systems.

The library never prints and never imports the CLI; see ``cli/`` for the command-line shell.
"""

__version__ = "0.1.0"
