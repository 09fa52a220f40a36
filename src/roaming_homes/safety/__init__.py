"""The safety net: the replica markers, the loss guard and its baseline, what a refused
pass held back."""
