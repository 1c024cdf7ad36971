"""nrun core: everything behind the thin Hydra launcher plugins, imported only when used."""
