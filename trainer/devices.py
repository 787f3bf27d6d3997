"""Where training runs: every visible GPU, several machines (TF_CONFIG), or the CPU."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)


@dataclass
class Placement:
    strategy: Any  # a tf.distribute.Strategy
    description: str  # said in the log and stored in config.json
    replicas: int
    mixed_precision: bool  # float16 compute on GPUs; the saved model is float32
    is_chief: bool = True  # only the chief of a multi-worker cluster writes the registry


def choose_placement() -> Placement:
    """MultiWorkerMirrored when TF_CONFIG names a cluster, Mirrored over GPUs, else CPU.

    MultiWorkerMirroredStrategy must be created before other TensorFlow work in the process:
    call this first thing in a training process (``pingo train`` does).
    """
    import tensorflow as tf

    if os.environ.get("TF_CONFIG"):
        cluster = json.loads(os.environ["TF_CONFIG"]).get("cluster", {})
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        gpus = tf.config.list_physical_devices("GPU")
        task = json.loads(os.environ["TF_CONFIG"]).get("task", {})
        # The "chief" task if the cluster names one, else worker 0 (TensorFlow's convention).
        chief = task.get("type") == "chief" or (
            "chief" not in cluster
            and task.get("type") == "worker"
            and int(task.get("index", 0)) == 0
        )
        desc = (
            f"MultiWorkerMirroredStrategy over {sum(map(len, cluster.values()))} workers "
            f"({len(gpus)} GPU(s) here; this is {task.get('type')} {task.get('index')})"
        )
        return Placement(strategy, desc, strategy.num_replicas_in_sync, bool(gpus), chief)
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) > 1:
        strategy = tf.distribute.MirroredStrategy()
        return Placement(
            strategy, f"MirroredStrategy over {len(gpus)} GPUs", strategy.num_replicas_in_sync, True
        )
    if gpus:
        return Placement(tf.distribute.OneDeviceStrategy("/gpu:0"), "1 GPU", 1, True)
    return Placement(
        tf.distribute.get_strategy(), f"CPU ({os.cpu_count()} cores; no GPU visible)", 1, False
    )
