"""Search spaces: one YAML file per space, plus plain model definitions where torchvision has none."""
