"""MaskTune (Asgari et al., NeurIPS 2022) as a library the DVC stages share.

Subpackages by role, each depending only on those listed before it (no import cycle, not even
through imports inside functions; tests/test_architecture.py checks both):

- `errors`: the one-line `UserError` and the stage wrapper.
- `config`: params.yaml's schema (every key's type and bounds) and each stage's typed, frozen config.
- `io`: atomic outputs, HDF5 helpers, the resume journal.
- `data`: the data contract: the prepared-file format, views (transforms and their geometry), masks
  (file and application) and `Split`, the one Dataset every split is read through.
- `datasets`: one module per dataset (reader, views, sources, groups) in a registry.
- `models`: one protocol (`features`, `classifier`, `grad_cam_target_layer`), a registry, checkpoints.
- `train`: the training loop, prediction, seeding.
- `saliency`: batched XGradCAM, the saliency file (read side) and the step that writes it.
- `masking`: MaskTune's threshold and RandMask's squares, and the step that writes the masks file.
- `eval`: group metrics and figures.

Stages (`stages/<name>.py`, one per `dvc.yaml` stage) parse their config, call these, write outputs.
"""
