"""MaskTune (Asgari et al., NeurIPS 2022) and the shortcut-removal methods beside it, as a library the DVC
stages share.

Subpackages by role, each importing only those listed before it (no import cycle, not even through imports
inside functions; tests/test_architecture.py checks both, in this order):

- `errors`: the one-line `UserError`, the stage wrapper and its error translators.
- `precision`, `seeding`, `selection`: autocast and gradient scaling; every seed from one; the validation
  selection rules and the ✗/✓ of group-label use.
- `config`: the mechanism of params: field types, params.yaml read as DVC reads it, `param(key, field)`
  declarations resolved per stage, the whole-file check. Each config lives beside the code that reads it.
- `io`: atomic outputs, HDF5 helpers (checksummed), the resume journals.
- `distributed`: torchrun workers started by the stage, DDP, rows and batches across ranks.
- `methods`: what a method is (`Spec`); `registry` (below) finds them all.
- `data`: the data contract: the prepared file, views (transforms and their geometry), masks (file and
  application) and `Split`, the one Dataset every split is read through.
- `groups`: the groups file, the contract between group inference and trainers.
- `datasets`: one module per dataset (reader, views, sources, groups, its `prepare.<name>` params), found by
  its `SPEC`.
- `models`: one protocol (`features`, `classifier`, `grad_cam_target_layer`), a registry, checkpoints, and
  the passes that run a network without training it (`models.predict`).
- `train`: the one training function (`fit`, its objective hook, the epoch journal), the training sequence of
  every run from scratch (`network`), the finetune.
- `saliency`: saliency methods, one module each (XGradCAM, LRP), the pass that writes their maps, the file.
- `masking`: maskers, one module each (MaskTune, RandMask).
- `eval`: group metrics, the reports, figures, selective classification.
- `group_inference`, `robust_train`, `last_layer`: one module per method of each role.
- `registry`: every method and stage config, for `check_params` and the tests.
- `summary`: results over seeds and experiments.

Stages (`stages/<name>.py`, one per `dvc.yaml` stage) parse their config, call these, write outputs.
"""
