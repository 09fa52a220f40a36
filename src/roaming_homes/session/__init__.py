"""What one user's session keeps between passes: the sync lock, the state and history,
the progress of the running pass."""
