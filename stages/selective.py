"""Stage `selective`: selective classification, the MaskTune paper's second use of its model.

The official score (aliasgharkhani/Masktune src/methods/base_method.py, `test_selective_classification`)
multiplies the softmaxes of the best ERM checkpoint and of the fine-tuned model and takes a softmax
again; its threshold for a target coverage is read from the sorted validation confidences. Reported
here for every masking method (MaskTune, RandMask) beside ERM's and the fine-tuned model's own softmax
response and the two-ERM control (the same product with a second ERM model of another seed,
seed `train_erm.seed` + each of `selective.control_seed_offsets`): the realised test coverage and selective error at each target coverage,
the AURC, and the risk-coverage curves (`dvc plots`). The rules are masktune/eval/selective.py.

The models `evaluate` predicted are read from its logits (`--logits`, each checked against its
checkpoint's digest); only the controls are predicted here. Writes the headline (`--metrics`: AURC,
error and coverage at each target, per score and test split) and in `--details` the full results
(details.json: thresholds, accuracies, curves), the Markdown table (table.md) and the curves' CSV
(risk_coverage.csv).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from masktune.config.params import load_config
from masktune.data.prepared import open_prepared
from masktune.data.splits import open_split
from masktune.distributed import select_device
from masktune.errors import run_stage
from masktune.eval.logits import model_titles, read_logits
from masktune.eval.models import model_file
from masktune.eval.selective import (
    ERM_MODEL,
    SelectiveConfig,
    control_checkpoint,
    control_model_name,
    selective_headline,
    selective_markdown,
    selective_report,
    selective_scores,
    write_curves,
)
from masktune.io.files import atomic_directory, write_json
from masktune.models.checkpoint import load_checkpoint
from masktune.models.predict import predict_logits


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="prepared dataset (HDF5)")
    parser.add_argument("--models", required=True, help="folder of the checkpoints (models/control/: the controls)")
    parser.add_argument("--logits", required=True, help="HDF5: `evaluate`'s logits of the models it predicted")
    parser.add_argument("--metrics", required=True, help="JSON: the headline, per score and test split")
    parser.add_argument("--details", required=True, help="folder: details.json, table.md, risk_coverage.csv")
    args = parser.parse_args()

    config = load_config(SelectiveConfig, "selective")
    prepared, spec = open_prepared(args.data)
    fine_tuned = config.methods["masking"]  # the models that fine-tune ERM's, scored with it by the product
    titles = model_titles(args.logits)
    scores = selective_scores([(name, titles.get(name, name)) for name in fine_tuned], config.control_seed_offsets)
    checkpoints = {ERM_MODEL: model_file(args.models, ERM_MODEL),
                   **{name: model_file(args.models, name) for name in fine_tuned},
                   **{control_model_name(offset): control_checkpoint(args.models, offset)
                      for offset in config.control_seed_offsets}}
    splits = ("val", *spec.test_splits)
    evaluated = read_logits(args.logits, checkpoints, splits, {split: prepared.length(split) for split in splits})
    device = select_device()
    models = {name: load_checkpoint(path, device)[0] for name, path in checkpoints.items() if name not in evaluated}
    print(f"selective: logits of {', '.join(evaluated) or 'no model'} from {args.logits}; "
          f"predicting {', '.join(models) or 'no model'}")
    logits, labels = {}, {}
    for split in splits:
        data = open_split(prepared, split, spec.views, "eval", config.workers)
        labels[split] = data.labels
        predicted = {name: predict_logits(model, data, config.eval_batch_size, device, f"{name} on {split}")
                     for name, model in models.items()}
        logits[split] = {name: evaluated[name][split] if name in evaluated else predicted[name]
                         for name in checkpoints}
    tests = {split: logits[split] for split in spec.test_splits}
    reports = {score.name: selective_report(score, logits["val"], tests, labels, config.coverages)
               for score in scores}

    write_json(args.metrics, selective_headline(reports))
    with atomic_directory(args.details) as tmp_dir:
        write_json(Path(tmp_dir) / "details.json",
                   {"dataset": prepared.dataset, "coverages": list(config.coverages),
                    "checkpoints": {name: str(path) for name, path in checkpoints.items()},
                    "scores": {score.name: {"title": score.title, "role": score.role, "models": list(score.models),
                                            "results": reports[score.name]} for score in scores}})
        (Path(tmp_dir) / "table.md").write_text(selective_markdown(prepared.dataset, scores, reports))
        write_curves(tmp_dir, reports)
    for score in scores:
        print(f"{score.name}: " + ", ".join(
            f"{split} AURC {100 * report['aurc']:.3f}, error at "
            + " / ".join(f"{t['target_coverage']:g}% {100 * t['error']:.2f}%" for t in report["targets"])
            for split, report in reports[score.name].items()))


if __name__ == "__main__":
    main()
