"""Plan: is this training run full or incremental, and what does it read."""
