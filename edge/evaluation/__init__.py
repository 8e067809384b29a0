"""Evaluation of models on labelled data (detection: mAP, counting accuracy)."""
