"""The torchvision families of the coverage table, shared by the conversion and channel-ordering tests."""

__all__ = ["FAMILIES", "AUX"]

# family, model, input size for the forward/backward checks, least share of slimmable units
FAMILIES = [
    ("ResNet", "resnet18", 64, 0.85),
    ("ResNeXt", "resnext50_32x4d", 64, 0.9),
    ("Wide ResNet", "wide_resnet50_2", 64, 0.9),
    ("MobileNetV2", "mobilenet_v2", 64, 0.9),
    ("MobileNetV3", "mobilenet_v3_small", 64, 0.9),
    ("MNASNet", "mnasnet0_5", 64, 0.9),
    ("EfficientNet", "efficientnet_b0", 64, 0.9),
    ("EfficientNetV2", "efficientnet_v2_s", 64, 0.9),
    ("RegNetX", "regnet_x_400mf", 64, 0.9),
    ("RegNetY", "regnet_y_400mf", 64, 0.9),
    ("ShuffleNetV2", "shufflenet_v2_x0_5", 64, 0.15),  # channel shuffle freezes the stream; branch widths slim
    ("DenseNet", "densenet121", 64, 0.95),
    ("SqueezeNet", "squeezenet1_1", 64, 0.9),
    ("VGG", "vgg11_bn", 64, 0.8),
    ("GoogLeNet", "googlenet", 64, 0.9),
    ("Inception v3", "inception_v3", 299, 0.9),  # its auxiliary head needs the full input size
    ("ConvNeXt", "convnext_tiny", 64, 0.9),  # layer scale and LayerNorm are sliced with their units
    ("AlexNet", "alexnet", 64, 0.7),
]
AUX = {"googlenet": {"aux_logits": True, "init_weights": False}, "inception_v3": {"aux_logits": True, "init_weights": False}}
