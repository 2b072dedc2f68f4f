"""Rules that split a `keras.applications` backbone into its published stages.

A *stage* is a run of consecutive blocks that work at the same resolution and
width (the rows of the architecture table in each paper). Stages are the unit
that fine-tuning unfreezes and that discriminative learning rates are assigned
to, so a rule only has to name the stage of each layer from the layer's name.
"""

import re


def assign_stages(layer_names, patterns):
    """Assigns a stage index to every layer of a backbone from its name.

    Each pattern is tried in order on each name; the first that matches gives
    the stage. A layer that no pattern matches (padding, pooling, the final
    `top_conv`) belongs to the stage of the layer before it, and layers before
    the first match (the stem) belong to the first stage, so stage indices never
    decrease along the backbone.

    Args:
        layer_names: Sequence of layer names, in the backbone's layer order.
        patterns: Sequence of `(regex, to_stage)` pairs. `regex` is searched in
            the name; `to_stage` maps the `re.Match` to an integer stage index.

    Returns:
        A list of integers, one per name, or `None` if no name matched any
        pattern (the backbone is not of the family the rule describes).

    Example:

    >>> assign_stages(
    ...     ["stem", "conv2_block1_conv", "pool", "conv3_block1_conv"],
    ...     [(r"^conv(\\d)_", lambda m: int(m.group(1)) - 2)],
    ... )
    [0, 0, 0, 1]
    """
    compiled = [(re.compile(regex), to_stage) for regex, to_stage in patterns]
    raw = []
    for name in layer_names:
        stage = None
        for regex, to_stage in compiled:
            match = regex.search(name)
            if match:
                stage = to_stage(match)
                break
        raw.append(stage)
    known = [stage for stage in raw if stage is not None]
    if not known:
        return None
    stages = []
    current = known[0]
    for stage in raw:
        if stage is not None:
            # A stray layer named like an earlier stage must not move the
            # boundary backwards: stages are contiguous by construction.
            current = max(current, stage)
        stages.append(current)
    return stages


def number_minus(offset):
    """Returns a `to_stage` callable: the first regex group minus `offset`.

    Args:
        offset: Integer subtracted from the captured number.

    Returns:
        A callable `re.Match -> int`.

    Example:

    >>> import re
    >>> number_minus(1)(re.match(r"block(\\d)", "block3a"))
    2
    """
    return lambda match: int(match.group(1)) - offset


def block_table(table, default_block=0):
    """Returns a `to_stage` callable that maps a captured block id via `table`.

    Used for MobileNets, whose layer names number single blocks
    (`block_7_expand`) rather than stages.

    Args:
        table: Sequence of integers; `table[block_id]` is the stage.
        default_block: Block id used when the regex group did not participate
            (MobileNet's first block is named `expanded_conv_` without a
            number). Defaults to `0`.

    Returns:
        A callable `re.Match -> int`.

    Example:

    >>> import re
    >>> block_table([0, 1, 1])(re.match(r"block_(\\d+)", "block_2_add"))
    1
    """

    def to_stage(match):
        block = match.group(1)
        return table[int(block) if block is not None else default_block]

    return to_stage


# Stage tables of the inverted-residual families: `table[block_id] = stage`.
# Blocks of one stage share the output width in the papers' tables.
MOBILENET_V2_STAGES = (0, 1, 1, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 5, 5, 5, 6)
MOBILENET_V3_SMALL_STAGES = (0, 1, 1, 2, 2, 2, 3, 3, 4, 4, 4)
MOBILENET_V3_LARGE_STAGES = (0, 1, 1, 2, 2, 2, 3, 3, 3, 3, 4, 4, 5, 5, 5)

# Ready-made pattern lists, one per naming scheme used in keras.applications.
RESNET_PATTERNS = ((r"^conv(\d)_", number_minus(1)),)  # ResNet*, DenseNet*
EFFICIENTNET_PATTERNS = ((r"^block(\d+)[a-z]_", number_minus(1)),)
MOBILENET_V2_PATTERNS = (
    (r"^(?:block_(\d+)|expanded_conv)_", block_table(MOBILENET_V2_STAGES)),
)
MOBILENET_V3_SMALL_PATTERNS = (
    (r"^expanded_conv(?:_(\d+))?_", block_table(MOBILENET_V3_SMALL_STAGES)),
)
MOBILENET_V3_LARGE_PATTERNS = (
    (r"^expanded_conv(?:_(\d+))?_", block_table(MOBILENET_V3_LARGE_STAGES)),
)
CONVNEXT_PATTERNS = (
    (r"_stage_(\d+)_", number_minus(0)),
    # `downsampling_block_i` opens stage i + 1 (the stem opens stage 0).
    (r"_downsampling_block_(\d+)", number_minus(-1)),
)
# InceptionV3 names its convolutions generically (`conv2d_17`), but every
# Inception module ends in a concatenation `mixedN`, so the layers of a module
# follow the stage of the module before it. The grid reductions (`mixed3`:
# 35->17, `mixed8`: 17->8) therefore close stages 0 and 1; `mixed9` and
# `mixed10` form stage 2.
INCEPTION_V3_PATTERNS = (
    (r"^mixed(\d+)$", block_table((0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2))),
)
