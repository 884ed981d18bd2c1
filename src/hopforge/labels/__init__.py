"""labels: turn-level labels (rules, or a teacher acting as judge) and the loss-weight policies."""
