"""nrun_lepton: each point as a DGX Cloud Lepton job through the leptonai v2 SDK (``executor``),
its options (``options``), the job body (``spec``), the SDK calls (``api``: the only module that
imports leptonai, on first use) and the stateless view from any shell (``control``)."""
