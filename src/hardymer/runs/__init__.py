"""Runs: the run folder (:class:`Run`), experiments over its cells, run configs and presets,
sweeps, the results store, and re-evaluation of finished runs."""
