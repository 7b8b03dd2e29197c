"""Real size and speed: structured masks applied physically, and latency measured, not assumed.

``removal`` takes the masked channels out through Torch-Pruning's dependency graph (``groups``
decides, per coupled group, which channels go and keeps the outputs exact), ``latency`` times
forward passes, and ``costs`` puts compression, FLOPs and measured latency side by side.
"""
