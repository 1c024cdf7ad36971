"""nrun_docker: each point in containers on a Docker engine (``executor``), the container spec
and its `docker run` rendering (``spec``), the engine calls (``engine``) and the stateless view
from any shell (``control``)."""
