"""Analyses of trained and pruned networks: recall distortion, loss landscape and valley, Hessian spectrum, the fundamental limit, attributions."""
