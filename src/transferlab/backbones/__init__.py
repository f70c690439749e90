"""Backbones: timm models by name and small built-ins, with stages, weights loading and export."""

from transferlab.backbones.backbone import Backbone
from transferlab.backbones.factory import BUILTINS, create_backbone
from transferlab.backbones.stages import Stage

__all__ = ["BUILTINS", "Backbone", "Stage", "create_backbone"]
