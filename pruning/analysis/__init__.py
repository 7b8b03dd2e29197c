"""Analysis tools for trained and pruned networks: curvature (Hessian-vector products) and more."""
