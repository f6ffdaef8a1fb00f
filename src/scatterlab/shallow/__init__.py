"""Wide shallow networks: random features, mean-field training, lazy training (plain torch)."""
