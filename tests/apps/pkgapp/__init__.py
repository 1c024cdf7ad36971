"""A Hydra app that is a package module (`python -m pkgapp.main`), with a relative import."""
