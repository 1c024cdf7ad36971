"""nrun_slurm: the sweep as one Slurm job array through submitit (``executor``), its settings
(``options``), what Slurm says (``state``), where Slurm is reached (``site``, ``ssh``), the
submission (``submit``), what a task runs (``task``), dependencies (``deps``) and the stateless
view from any shell (``control``)."""
