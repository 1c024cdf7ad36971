"""nrun_slurm: the sweep as Slurm job arrays through submitit (``executor``), its settings
(``options``), the cluster's limits (``limits``), what Slurm says (``state``), where Slurm is
reached (``site``, ``ssh``), the submission (``submit``), what a task runs (``task``: one point;
``packworker``: several, through ``nrun_core.runtime.pack``), dependencies (``deps``) and the
stateless view from any shell (``control``)."""
