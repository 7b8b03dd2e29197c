"""Pruning methods: ``base`` (what a method is), ``oneshot`` (one method per importance
criterion), ``loop`` (the training loop of methods that train) and one module per method that
prunes while it trains. ``pruning.registry`` lists them; nothing here imports the registry."""
