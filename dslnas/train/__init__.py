"""Training a searched genotype from scratch: recipes, the training loop, ``dslnas train``."""
