"""One module per thing a user (or the session service) does: sync, watch, status, check,
conflicts, restore, the daemon."""
