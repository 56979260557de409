"""``zsad grid``: ablation grids over configs, seeds and hyper-parameters, each run a ``zsad fit`` then ``test``.

- :mod:`~zsad.workflow.grid.spec` reads the grid file, :mod:`~zsad.workflow.grid.expand` expands its axes,
- :mod:`~zsad.workflow.grid.resolve` checks each run's config with the CLI's parser,
- :mod:`~zsad.workflow.grid.run_config` places a run's outputs and hashes its config,
- :mod:`~zsad.workflow.grid.runner` runs them (one :mod:`~zsad.workflow.grid.worker` process each) and
  :mod:`~zsad.workflow.grid.records` keeps ``runs.jsonl``, :mod:`~zsad.workflow.grid.sweep` writes a W&B sweep.

See docs/grids.md for the grid file and the output folder.
"""
