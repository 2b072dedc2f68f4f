"""Tests for tfkd/teachers/stage_rules.py (pure name rules, no models)."""

from tfkd.teachers import stage_rules


def test_unmatched_layers_join_previous_stage_and_stem_joins_first():
    names = ["input", "conv1_pad", "conv1_conv", "pool1_pool",
             "conv2_block1_1_conv", "pool2_conv", "conv3_block1_1_conv", "bn"]
    stages = stage_rules.assign_stages(names, stage_rules.RESNET_PATTERNS)
    assert stages == [0, 0, 0, 0, 1, 1, 2, 2]


def test_no_match_returns_none():
    assert stage_rules.assign_stages(
        ["dense", "dense_1"], stage_rules.RESNET_PATTERNS) is None


def test_stages_never_decrease():
    # A stray layer named like an earlier stage must not reopen it.
    names = ["block1a_conv", "block2a_conv", "block1z_odd", "block3a_conv"]
    stages = stage_rules.assign_stages(
        names, stage_rules.EFFICIENTNET_PATTERNS)
    assert stages == [0, 1, 1, 2]


def test_mobilenet_v2_blocks_map_to_paper_stages():
    names = ["Conv1", "expanded_conv_project"] + [
        f"block_{i}_expand" for i in range(1, 17)] + ["Conv_1"]
    stages = stage_rules.assign_stages(
        names, stage_rules.MOBILENET_V2_PATTERNS)
    # Rows of the MobileNetV2 table: 1, 2, 3, 4, 3, 3, 1 blocks (+ stem, top).
    assert stages == [0, 0, 1, 1, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6]


def test_convnext_downsampling_opens_next_stage():
    names = ["convnext_tiny_stem", "convnext_tiny_stage_0_block_0_dw",
             "convnext_tiny_downsampling_block_0",
             "convnext_tiny_stage_1_block_0_dw", "layer_normalization"]
    stages = stage_rules.assign_stages(names, stage_rules.CONVNEXT_PATTERNS)
    assert stages == [0, 0, 1, 1, 1]


def test_inception_modules_close_stages():
    names = ["conv2d", "mixed0", "conv2d_9", "mixed2", "conv2d_20", "mixed3",
             "conv2d_40", "mixed8", "conv2d_80", "mixed10"]
    stages = stage_rules.assign_stages(
        names, stage_rules.INCEPTION_V3_PATTERNS)
    assert stages == [0, 0, 0, 0, 0, 1, 1, 2, 2, 2]


def test_block_table_default_block_for_unnumbered_first_block():
    names = ["expanded_conv_depthwise", "expanded_conv_1_expand",
             "expanded_conv_3_expand", "expanded_conv_8_expand"]
    stages = stage_rules.assign_stages(
        names, stage_rules.MOBILENET_V3_SMALL_PATTERNS)
    assert stages == [0, 1, 2, 4]
