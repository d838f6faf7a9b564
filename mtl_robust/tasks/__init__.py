"""Task specs: per-sample losses, torchmetrics metrics and metric directions for each dense task."""

from mtl_robust.tasks.base import Task, TaskMetric
from mtl_robust.tasks.binary import BinaryMetric, BinaryTask
from mtl_robust.tasks.depth import DepthMetric, DepthTask
from mtl_robust.tasks.edge import EdgeTask
from mtl_robust.tasks.human_parts import HumanPartsTask
from mtl_robust.tasks.normal import NormalMetric, NormalTask
from mtl_robust.tasks.registry import TASKS, build_task, build_tasks
from mtl_robust.tasks.regression import RegressionMetric, RegressionTask
from mtl_robust.tasks.saliency import SaliencyTask
from mtl_robust.tasks.segmentation import SegmentationMetric, SegmentationTask

__all__ = [
    "TASKS",
    "BinaryMetric",
    "BinaryTask",
    "EdgeTask",
    "HumanPartsTask",
    "SaliencyTask",
    "DepthMetric",
    "DepthTask",
    "NormalMetric",
    "NormalTask",
    "RegressionMetric",
    "RegressionTask",
    "SegmentationMetric",
    "SegmentationTask",
    "Task",
    "TaskMetric",
    "build_task",
    "build_tasks",
]
