"""Starting and stopping things: the embedded PostgreSQL (``dbserver``), the persistent Dagster instance
(``instance``), running a job over a range of days (``ranges.run_range``, ``runner``) and the other
in-process launches the command line makes (asset selections, the demo's sensor ticks, a manual
intervention). It imports the stages' definitions; the command line (``cs_pipeline.cli``) calls it."""
