"""Token datasets: built-in generators (countdown) and user token files (.npy)."""
