"""``python -m cs_pipeline.cli``: the ``cs-pipeline`` command."""

from cs_pipeline.cli import main

main()
