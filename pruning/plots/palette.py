"""Every colour the figures use and the constants more than one page shares, each defined once,
so that one meaning keeps one colour across pages (and two meanings never share a name)."""

from __future__ import annotations

# Hues (the "flat UI" palette). Figures use the named roles below, not these directly.
BLUE = "#2980b9"
RED = "#c0392b"
BRIGHT_RED = "#e74c3c"
GREEN = "#27ae60"
BRIGHT_GREEN = "#2ecc71"
ORANGE = "#e67e22"
PURPLE = "#8e44ad"
GREY = "#7f8c8d"
LIGHT_GREY = "#95a5a6"
DARK_GREY = "#555555"
CLOUD = "#ecf0f1"
NAVY = "#1b2a41"
MIST = "#dfe4ea"

# Dense against pruned, on every page.
DENSE_COLOUR = GREY
PRUNED_COLOUR = RED
MEASURE_COLOUR = BLUE  # a single measured series (bars or one line) with nothing to contrast it with
WARN_SPARSITY = 0.99  # a layer pruned at least this much is flagged as nearly emptied

# Lines for methods without a colour of their own, in order.
OTHER_COLOURS = (RED, GREEN, PURPLE, ORANGE, "#16a085", "#d35400", "#2c3e50", "#f1c40f")

# Masks page: a keep-mask is dark where kept, light where pruned.
MASK_KEPT_COLOUR = NAVY
MASK_PRUNED_COLOUR = MIST
MASK_COLOURSCALE = [[0.0, MASK_PRUNED_COLOUR], [1.0, MASK_KEPT_COLOUR]]
BOUNDARY_COLOUR = ORANGE
CHANGE_COLOURS = {"pruned": MASK_PRUNED_COLOUR, "kept": MASK_KEPT_COLOUR, "newly pruned": BRIGHT_RED,
                  "spliced back": BRIGHT_GREEN}  # keyed like pruning.mask_diff.CHANGE_CODES

# Compare page.
BASELINE_COLOURS = {"random": DENSE_COLOUR, "magnitude": BLUE}

# Recall page.
GAP_COLOUR = BLUE
FIT_COLOUR = PRUNED_COLOUR
RECALL_METHOD_COLOURS = {"magnitude": BLUE, "undecayed": RED}
FLIP_COLOURS = {"lost": PRUNED_COLOUR, "gained": GREEN, "changed": DARK_GREY}

# Loss valley page.
SPLIT_COLOURS = {"train": BLUE, "test": ORANGE}
MODEL_MARKER_LINE_COLOUR = LIGHT_GREY  # the dotted verticals at the dense and the pruned model
BARRIER_COLOUR = PURPLE

# Limit page.
LIMIT_PREDICTED_COLOUR = PURPLE
LIMIT_ACTUAL_COLOUR = GREEN

# Attributions page: a channel pruning kept (blue, against the red of removed ones); not the
# Masks page's dark "kept".
ATTRIBUTION_KEPT_COLOUR = BLUE
REMOVED_STRIP_COLOURSCALE = [[0, CLOUD], [1, PRUNED_COLOUR]]
