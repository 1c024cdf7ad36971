"""nrun_dgxcloud: each point as a Run:ai workload on DGX Cloud (``executor``), its options
(``options``), the workload body (``spec``), the REST client with its token cache and retries
(``api``, httpx) and the stateless view from any shell (``control``)."""
