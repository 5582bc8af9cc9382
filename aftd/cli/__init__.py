"""Command-line entry points: ``aftd`` (the daemon) and ``aft`` (the client)."""
