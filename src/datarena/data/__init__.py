"""Real data sources, dataset containers, file formats and checksums."""
