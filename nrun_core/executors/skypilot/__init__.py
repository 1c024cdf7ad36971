"""nrun_skypilot: sweep points on any cloud or cluster SkyPilot reaches (``import sky`` happens
only in here, and only when this executor runs)."""
