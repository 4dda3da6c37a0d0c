"""Workers: the job loop and the handlers it runs (export, augmentation, training)."""
