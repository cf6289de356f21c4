"""Stage `clusterfix_train@<method>`: ClusterFix's model, trained with cluster re-weighting.

The network of train_erm (same start: ImageNet weights where the recipe has them), a pseudo-label
head per class on its penultimate features, the loss and weights of masktune/methods/clusterfix.py
(target cross-entropy weighted per cluster by the pseudo-heads' losses, momentum, + beta x pseudo
cross-entropy), `clusterfix.epochs` epochs with the recipe's optimiser and schedule, on the training
view (augmented where the dataset's ERM is). The checkpoint kept is the best by
`clusterfix.selection`: average validation accuracy (default, ✗) or, as the official code, the
unbiased or worst-group validation accuracy (✓), which the checkpoint records for the report.
"""
from __future__ import annotations

import argparse

import torch

from masktune.config.stages import load_stage_config
from masktune.data.splits import open_split
from masktune.datasets import open_prepared
from masktune.distributed import select_device
from masktune.errors import run_stage
from masktune.io.hdf5 import read_arrays, read_attrs
from masktune.methods import get_method
from masktune.methods.clusterfix import (
    ClusterFixTraining,
    ClusterWeights,
    PseudoHeads,
    PseudoLabels,
    make_adam,
    resolve_seed,
)
from masktune.methods.selection import SELECT_BY, selection_score
from masktune.models.pretrained import initial_model
from masktune.train.fit import finish_journal, fit, live_folder, resume_key
from masktune.train.loop import seed_everything


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--method", required=True, help="the ClusterFix entry of the registry: clusterfix")
    parser.add_argument("--data", required=True, help="prepared dataset (HDF5)")
    parser.add_argument("--pseudo-labels", required=True, help="the cluster ids of clusterfix_clusters (HDF5)")
    parser.add_argument("--out", required=True, help="checkpoint of the selected epoch")
    parser.add_argument("--live", required=True, help="dvclive folder (metrics.json, plots/)")
    args = parser.parse_args()

    method = get_method(args.method)
    config = load_stage_config(f"clusterfix_train@{method.name}")
    seed = resolve_seed(config.seed)
    generator = seed_everything(seed)
    prepared, spec = open_prepared(args.data)
    train = open_split(prepared, "train", spec.views, "train", config.workers)
    val = open_split(prepared, "val", spec.views, "eval", config.workers)
    k = int(read_attrs(args.pseudo_labels)["clusters_per_class"])
    ids = read_arrays(args.pseudo_labels, {"train": (len(train),), "val": (len(val),)})
    pseudo = PseudoLabels(k, prepared.num_classes, ids)
    device = select_device()
    model = initial_model(config.arch, prepared.num_classes, config.pretrained, config.weights_path, device)
    heads = PseudoHeads(model.classifier.in_features, prepared.num_classes, k).to(device)
    parameters = [*model.parameters(), *heads.parameters()]
    optimizer = (make_adam(parameters, config.lr, config.weight_decay) if config.optimizer == "adam" else
                 torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay))
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
                 if config.lr_schedule == "cosine" else None)
    weights = ClusterWeights(ids["train"], pseudo.num_clusters, config.weight_momentum,
                             incremental=config.statistics == "incremental")
    training = ClusterFixTraining(heads, weights, pseudo, config.beta,
                                  val if config.val_losses_into_train_buffer else None, config.eval_batch_size)
    group_labels = method.group_labels_for(config.selection)
    print(f"ClusterFix: {pseudo.num_clusters} clusters ({k} per class), beta {config.beta}, {config.optimizer} "
          f"lr {config.lr}; selection by {config.selection} validation accuracy (group labels {group_labels})")
    # the drawn seed of an unseeded run (clusterfix.seed: null) is part of the key: such a run starts over
    resume = {**resume_key(f"clusterfix_train@{method.name}", config, device, args.data, args.pseudo_labels),
              "seed": seed}
    with live_folder(args.live) as live:
        best = fit(model, optimizer, train, val, epochs=config.epochs, batch_size=config.batch_size,
                   eval_batch_size=config.eval_batch_size, generator=generator, device=device, live=live,
                   best_path=args.out, score=selection_score(val, config.selection),
                   select_by=SELECT_BY[config.selection], name="ClusterFix", scheduler=scheduler,
                   epoch_fn=training.epoch, epoch_state=training, resume=resume,
                   checkpoint_info={"arch": config.arch, "num_classes": prepared.num_classes,
                                    **method.checkpoint_info(group_labels)})
        live.summary["best"] = best
        live.summary["seed"] = seed
        live.summary["final_cluster_weights"] = [round(w, 6) for w in weights.cluster_weights().tolist()]
        live.summary["recipe"] = {"optimizer": config.optimizer, "lr": config.lr, "weight_decay": config.weight_decay,
                                  "batch_size": config.batch_size, "epochs": config.epochs, "beta": config.beta,
                                  "lr_schedule": config.lr_schedule, "momentum": config.weight_momentum}
    finish_journal(args.out, resume)


if __name__ == "__main__":
    main()
