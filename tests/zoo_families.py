"""One small representative per timm family (a timm model module) for the zoo test, and why it was
chosen. Random init, no download; kwargs shrink depth/width or set the image size where timm allows."""

from __future__ import annotations

from typing import NamedTuple


class Family(NamedTuple):
    module: str  # timm.list_modules() name
    model: str
    kwargs: dict
    size: int  # image size of the zoo run
    reason: str
    heavy: bool = False  # left out of the default zoo run (budget); TRANSFERLAB_ZOO=all runs it


ZOO = [
    Family("resnet", "test_resnet", {}, 32, "timm's tiny ResNet: BatchNorm CNN, group_matcher stages"),
    Family("byobnet", "test_byobnet", {}, 32, "timm's tiny bring-your-own-blocks net"),
    Family("convnext", "test_convnext", {}, 32, "timm's tiny ConvNeXt: a norm-only head.norm group"),
    Family("efficientnet", "test_efficientnet", {}, 32, "depthwise convs (no LoRA), conv_head + bn2 group"),
    Family("mambaout", "test_mambaout", {}, 32, "timm's tiny MambaOut (gated CNN)"),
    Family("nfnet", "test_nfnet", {}, 32, "ScaledStdConv2d: LoRA merge of weight-standardized convs"),
    Family(
        "resnetv2",
        "resnetv2_50x1_bit",
        {"channels": (128, 256, 256, 256), "stem_chs": 32},
        32,
        "BiT: StdConv2d everywhere (LoRA in weight space); narrowed by kwargs (GroupNorm needs 32 | width)",
    ),
    Family("maxxvit", "test_maxvit", {"img_size": 32}, 32, "fixed-size window attention (img_size kwarg)"),
    Family("vision_transformer", "test_vit", {"img_size": 32}, 32, "timm's tiny ViT: cls token, pos_embed"),
    Family("vision_transformer_relpos", "test_vit_relpos", {"img_size": 32}, 32, "relative-position ViT"),
    Family(
        "metaformer", "poolformer_s12", {}, 32, "no group_matcher: feature_info stages (depths not a kwarg)"
    ),
    Family("pit", "pit_ti_224", {"img_size": 32, "depth": (1, 1, 1)}, 32, "no group_matcher; pooling ViT"),
    Family("levit", "levit_128s", {"img_size": 32}, 32, "caches attention biases in eval mode"),
    Family(
        "efficientvit_msra",
        "efficientvit_m0",
        {"img_size": 32},
        32,
        "caches attention biases in eval",
        heavy=True,
    ),
    Family("tiny_vit", "tiny_vit_5m_224", {}, 32, "caches attention biases in eval mode", heavy=True),
    Family(
        "swin_transformer",
        "swin_tiny_patch4_window7_224",
        {
            "img_size": 32,
            "embed_dim": 16,
            "depths": (1, 1, 1, 1),
            "num_heads": (1, 1, 1, 1),
            "window_size": 1,
        },
        32,
        "shifted windows, final norm group; shrunk by kwargs",
    ),
    Family(
        "densenet",
        "densenet121",
        {"growth_rate": 8, "block_config": (1, 1, 1, 1)},
        32,
        "stages all named features",
    ),
    Family("dpn", "dpn48b", {}, 32, "dual-path net; stages all named features", heavy=True),
    Family("hgnet", "hgnetv2_b0", {}, 32, "head.last_conv kept in the head (merged into the last stage)"),
    Family("regnet", "regnetx_002", {}, 32, "smallest RegNet"),
    Family("mobilenetv3", "lcnet_035", {}, 32, "smallest model of the MobileNetV3 module"),
    Family("ghostnet", "ghostnet_050", {}, 32, "ghost modules, many small stages", heavy=True),
    Family("mobilevit", "mobilevit_xxs", {}, 32, "conv + transformer hybrid"),
    Family("edgenext", "edgenext_xx_small", {}, 32, "head.norm group; conv + attention"),
    Family(
        "eva", "eva02_tiny_patch14_224", {"img_size": 28, "depth": 2}, 28, "rotary embeddings, fc_norm group"
    ),
    Family("deit", "deit_tiny_patch16_224", {"img_size": 32, "depth": 2}, 32, "DeiT (ViT variant module)"),
    Family("cait", "cait_xxs24_224", {"img_size": 32, "depth": 2}, 32, "class-attention blocks, layer scale"),
    Family(
        "mlp_mixer",
        "mixer_s16_224",
        {"img_size": 32},
        32,
        "fixed-size token mixing (num_blocks not a kwarg)",
        heavy=True,
    ),
    Family("dla", "dla46_c", {}, 32, "deep layer aggregation (tree stages)"),
    Family("fastvit", "fastvit_t8", {}, 32, "re-parameterizable blocks", heavy=True),
    Family("repvit", "repvit_m0_9", {}, 32, "re-parameterizable mobile ViT-style CNN", heavy=True),
    Family(
        "pvt_v2", "pvt_v2_b0", {"depths": (1, 1, 1, 1)}, 32, "pyramid ViT with spatial-reduction attention"
    ),
    Family("rexnet", "rexnet_100", {}, 32, "18 fine stages", heavy=True),
    Family("starnet", "starnet_s1", {}, 32, "star operation CNN"),
    Family("efficientvit_mit", "efficientvit_b0", {}, 32, "linear attention (MIT EfficientViT)"),
    Family("xcit", "xcit_nano_12_p16_224", {"img_size": 32, "depth": 2}, 32, "cross-covariance attention"),
    Family("hrnet", "hrnet_w18_small", {}, 32, "multi-branch; last stage holds most weights", heavy=True),
    Family("rdnet", "rdnet_tiny", {}, 32, "group_matcher(coarse) raises: feature_info fallback", heavy=True),
    Family("sknet", "skresnet18", {}, 32, "dilated convs (peft cannot adapt: weight space)", heavy=True),
    Family(
        "xception",
        "legacy_xception",
        {},
        32,
        "a stem conv1 and depthwise conv1s (exact LoRA names)",
        heavy=True,
    ),
]
