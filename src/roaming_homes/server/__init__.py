"""What runs on the server or is kept there for the user's computers: their records and the
deletions confirmed on one of them."""
