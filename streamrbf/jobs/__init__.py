"""Jobs: runnable pipelines built on the faces (``streamrbf run`` runs
:mod:`streamrbf.jobs.cluster_events`). ``pipelines/`` in a clone holds thin scripts that call
them."""
