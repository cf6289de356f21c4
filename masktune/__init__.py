"""MaskTune (Asgari et al., NeurIPS 2022) as a library the DVC stages share.

One module per concept: `datasets` (registry of datasets), `models` (registry of networks and their
XGradCAM target layers), `training` (loop, prediction, checkpoints), `saliency` (batched XGradCAM),
`masking` (MaskTune's threshold, RandMask's squares), `metrics` (group accuracies), `storage`
(atomic HDF5 outputs), `params` (validated, declared-only params), `figures`, `errors`.
"""
