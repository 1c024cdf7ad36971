"""Executors: one per backend, all with the same shape (render → start → poll → cancel, and a
stateless Control for any shell). Which executor a name means is ``nrun_core.registry``'s
business; each is imported by name on use, so `nrun status` on a local sweep never imports
docker or submitit.
"""
