"""dataset_factory: validation, hashing, near-duplicate index, batch classification, routing."""
