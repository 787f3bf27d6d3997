"""trainer: data loading from class folders, model definitions, training, evaluation, plots.

It writes registry entries (trainer.registry_writer); storage.registry lists and promotes them
and vision.model loads them.
"""

from trainer.run import TrainResult, should_train, train

__all__ = ["train", "should_train", "TrainResult"]
