"""trainer: data loading from class folders, model definitions, training, evaluation, plots."""
