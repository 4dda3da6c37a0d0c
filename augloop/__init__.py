"""augloop: augmentation, human review and multi-task training for small, imbalanced text datasets."""

__version__ = "0.1.0"
