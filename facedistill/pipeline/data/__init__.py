"""The torch side of the data: the CelebA Dataset, the training transforms and unlabeled faces."""
