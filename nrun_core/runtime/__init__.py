"""The part of nrun that runs beside the task, wherever it runs.

Stdlib plus hydra only: it is shipped next to the code into containers and remote hosts whose
Python may lack nrun's dependencies.
"""
