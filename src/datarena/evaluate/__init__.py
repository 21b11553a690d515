"""Fixed evaluators: DeepLabv3 for segmentation datasets, metrics, model checksums."""
