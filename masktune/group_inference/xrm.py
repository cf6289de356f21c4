"""XRM, Cross-Risk Minimization (Pezeshki, Bouchacourt, Ibrahim, Ballas, Vincent, Lopez-Paz, "Discovering
environments with XRM", ICML 2024, arXiv 2309.16748; official code facebookresearch/XRM), its first phase:
two twin networks, each trained on one random half of the training set, each imitating the confident
held-out mistakes of its sibling (a held-out row's label is replaced by the sibling's prediction with a
probability that grows with the sibling's confidence); at the end of training every training and
validation example is annotated with an environment by the cross-mistake rule (does a twin misclassify
it?). As groups (per class, the environment: group 2 * class + env, the "mistake" environment the named
minority, like JTT's error groups), any trainer here can use them; XRM's own second phase is GroupDRO on
them, selected by the worst *inferred* validation group (`groupdro` with `selection: worst_pseudo_group`).
No group labels anywhere. docs/xrm-notes.md walks through the official run step by step.

Followed as the official code (facebookresearch/XRM at 5e90815, file and line; the XRM parts are the
same at 7957455 and 22efd07):
- the halves (`random_halves`): an independent fair coin per training row, `assigns =
  torch.zeros(n, 1).bernoulli_(0.5)` (main.py L31-32), drawn once from the seeded generator
  (`set_all_seeds`, main.py L22, utils.py L17-22); the halves are random, not of equal size. A row with
  `assigns == 1` trains twin A (`pred_hi = pred_a * assigns + pred_b * (1 - assigns)`, algorithms.py L117);
  here `halves[i]` is that twin's index, 0 for A (the project's model) and 1 for B;
- the twins (`XRMTwins`): two networks of one architecture built the same way (`get_network` twice,
  main.py L27-29; `TwinNets` runs both on the whole batch, networks.py L137-147), one optimizer over both
  (`get_optim(hparams, net)` on the twins, main.py L30): here twin B's parameters are the objective's
  `parameters()`, which the training loop optimises with the model's;
- the loss (`twin_loss`, algorithms.py L97-99, L114-123): each row scored by the twin that trains on it
  (its held-in logits, L117) against its *current* (possibly flipped) label (L112), cross-entropy per row,
  and the batch's loss the *sum* over the classes present in the batch (by current label) of each class's
  mean loss: class-balanced, one loss for both twins (not a sum or mean of two twin losses);
- the label flips (`flip_labels`, algorithms.py L101-107, called after the step on the same forward pass,
  L126): for each row of the batch, the twin that holds it *out* gives its softmax confidence p and argmax
  class y_ho (L102, L118, detached); the row's label becomes y_ho with probability (p - 1/K) * K / (K - 1)
  (K classes: 0 for a uniform prediction, 1 for a certain one; L106), else it stays (L107). A twin's own
  training rows never take its prediction. Flips are persistent state, not cumulative counts: the label
  is overwritten, a later batch may overwrite it again (back to the original, or to another class), and
  a flip to the class a row already has changes nothing;
- the flip rate (`flip_rate`, utils.py L83-85): the share of training rows whose current label differs
  from the original one, reported every `checkpoint_freq` steps (main.py L41-42);
- no early stopping: the twins as they are after the last step annotate the data (main.py L45-55;
  "when phase==1: finds best hp_comb at 'end' step (no early stopping needed)", utils.py L149-153); the
  label-free selection is *between runs* (hyperparameter combinations): the run of the highest final
  flip rate (utils.py L210-213; `select_by_flip_rate`), a degenerate run scoring 0 (main.py L56-57,
  utils.py L79-81, L170-179; `is_degenerate`);
- the cross-mistake rule (`cross_mistake_annotation`, algorithms.py L128-138): both twins in eval mode
  (L47, via `evaluate`) predict every row; env = 1 where *either* twin's argmax differs from the row's
  original label, for the training rows and the validation rows alike (main.py L51-53 calls
  `cross_mistakes` without `is_training` for both splits; the training rows' held-in twin has fit them,
  so in effect their env is the held-out twin's mistake). HEAD's `is_training` branch only returns the
  held-out logits beside it (stored as `tr_ho`, main.py L54), never used for the environments;
- the inferred groups in phase 2: group = num_envs * y + env with num_envs = 2 (datasets.py L137-168,
  `torch.load(group_labels)[split]`), for train and val (`xrm_groups`);
- class-balanced sampling for CivilComments only (`balanced_batch`, hparams_registry.py L39;
  datasets.py L49-50, weights N / n_y by the original labels, with replacement): `class_balanced`.
Beyond (or unlike) the official code:
- one dedicated seeded `torch.Generator` draws the halves and then every flip (the official code draws
  both from torch's global generator, shared with dropout and the loaders), and its state is journaled:
  a resumed run flips exactly as an uninterrupted one (the official checkpoint keeps the labels and the
  halves, utils.py L55-58, L70-72, but no generator state);
- a flip probability is clamped to [0, 1] against rounding (the official `torch.bernoulli` would fail on
  p a hair under 1/K);
- `cross_mistake_annotation(..., rule="held_out")` annotates by the held-out twin alone (an option, not
  the official rule).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from masktune.config.fields import SEED, WORKERS, Bool, Choice, Int, Number
from masktune.config.params import param
from masktune.data.prepared import PreparedFile
from masktune.data.splits import ResampledSplit, Split
from masktune.groups import Groups, make_groups
from masktune.methods import Spec
from masktune.models.predict import predict_logits
from masktune.models.pretrained import initial_model
from masktune.precision import MixedPrecision
from masktune.train.fit import LAST, NO_VALIDATION, Keep
from masktune.train.network import OPTIMIZERS, TrainingConfig, TrainingRun, finish_training, start_training
from masktune.train.objective import Objective

RULES = ("either", "held_out")
TITLE = "XRM's cross-mistakes"


@dataclass(frozen=True, kw_only=True)
class XrmConfig(TrainingConfig):
    """Stage `xrm_twins@<name>`: XRM's twins, train_erm's network twice from its start (as the official ColorMNIST
    twins, trained from scratch: hparams_registry.py L60-85), trained together on random halves with label
    flipping, without augmentation; no validation pass and no early stopping (main.py L45-55)."""
    epochs: int = param("xrm.epochs", Int(1, recipe=True))
    lr: float = param("xrm.lr", Number(0.0, exclusive_minimum=True, recipe=True))
    weight_decay: float = param("xrm.weight_decay", Number(0.0, recipe=True))
    batch_size: int = param("xrm.batch_size", Int(1, recipe=True))
    optimizer: str = param("xrm.optimizer", Choice(options=OPTIMIZERS, recipe=True))
    class_balanced: bool = param("xrm.class_balanced", Bool())
    workers: int = param("xrm.workers", WORKERS)
    seed: int = param("xrm.seed", SEED)


SPEC = Spec(name="xrm", role="group_inference", family="xrm", title=TITLE,
            configs={"xrm_twins": XrmConfig}, groups_files=lambda name: (name,), groups_titles={"xrm": TITLE})


def _generator(generator: torch.Generator | int) -> torch.Generator:
    """`generator` itself, or a CPU generator seeded with it."""
    return generator if isinstance(generator, torch.Generator) else torch.Generator().manual_seed(int(generator))


def _halves(halves, n: int | None = None) -> torch.Tensor:
    halves = torch.as_tensor(np.asarray(halves.cpu() if isinstance(halves, torch.Tensor) else halves),
                             dtype=torch.int64)
    if halves.ndim != 1 or (n is not None and len(halves) != n):
        raise ValueError(f"halves must be one twin index per row ({n} rows), got shape {tuple(halves.shape)}")
    if len(halves) and not bool(((halves == 0) | (halves == 1)).all()):
        raise ValueError("halves must be 0 (twin A trains on the row) or 1 (twin B does)")
    return halves


def random_halves(n: int, generator: torch.Generator | int) -> np.ndarray:
    """Which twin trains on each of `n` training rows, 0 (twin A, the project's model) or 1 (twin B): an
    independent fair coin per row, as the official `assigns` (main.py L31-32; its 1, twin A, is 0 here),
    so the two halves are of random size. The other twin holds the row out. `generator`: a CPU
    `torch.Generator` (advanced by n draws) or a seed."""
    coins = torch.zeros(n, dtype=torch.float64).bernoulli_(0.5, generator=_generator(generator))
    return (1 - coins).to(torch.int64).numpy()


def held_in_logits(logits_a: torch.Tensor, logits_b: torch.Tensor, halves) -> torch.Tensor:
    """Each row's logits from the twin that trains on it (`pred_hi`, algorithms.py L117)."""
    trains_a = _halves(halves, len(logits_a)).to(logits_a.device)[:, None] == 0
    return torch.where(trains_a, logits_a, logits_b)


def held_out_logits(logits_a: torch.Tensor, logits_b: torch.Tensor, halves) -> torch.Tensor:
    """Each row's logits from the twin that holds it out (`pred_ho`, algorithms.py L118)."""
    trains_a = _halves(halves, len(logits_a)).to(logits_a.device)[:, None] == 0
    return torch.where(trains_a, logits_b, logits_a)


def class_balanced_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The sum, over the classes present among `labels`, of the mean cross-entropy of their rows (XRM's
    `get_loss`, algorithms.py L97-99; float32)."""
    losses = F.cross_entropy(logits.float(), labels, reduction="none")
    classes, inverse = torch.unique(labels, return_inverse=True)
    totals = torch.zeros(len(classes), dtype=losses.dtype, device=losses.device).index_add(0, inverse, losses)
    return (totals / torch.bincount(inverse, minlength=len(classes)).to(losses.dtype)).sum()


def twin_loss(logits_a: torch.Tensor, logits_b: torch.Tensor, halves, labels: torch.Tensor) -> torch.Tensor:
    """The twins' loss on a batch (algorithms.py L114-123): every row scored by its held-in twin against
    its current label, class-balanced (`class_balanced_loss`). Twin A's gradient comes from its own rows
    only, twin B's from its own."""
    return class_balanced_loss(held_in_logits(logits_a, logits_b, halves), labels)


def flip_probability(held_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(probability of a flip, the class it flips to) of each row, from the logits of the twin that holds
    it out: with p its softmax confidence and K the number of classes, (p - 1/K) * K / (K - 1), towards its
    argmax (algorithms.py L102, L106); clamped to [0, 1] against rounding. float32, detached."""
    k = held_out.shape[1]
    if k < 2:
        raise ValueError("XRM's flips need at least 2 classes")
    confidence, predicted = held_out.detach().float().softmax(1).max(1)
    return ((confidence - 1 / k) * k / (k - 1)).clamp(0.0, 1.0), predicted


def flip_labels(logits_a: torch.Tensor, logits_b: torch.Tensor, halves, labels: torch.Tensor,
                generator: torch.Generator | int) -> torch.Tensor:
    """The batch's labels after XRM's flips (algorithms.py L101-107): each row takes its held-out twin's
    argmax with probability `flip_probability`, else keeps `labels` (its current, possibly already flipped,
    label). One Bernoulli draw per row from `generator` (a CPU generator, or a seed), on the CPU whatever
    the logits' device, as the official code (L103); returns int64 CPU labels. The rows' own (held-in)
    twin plays no part."""
    probability, predicted = flip_probability(held_out_logits(logits_a, logits_b, halves))
    flip = torch.bernoulli(probability.cpu(), generator=_generator(generator)).bool()
    return torch.where(flip, predicted.cpu(), torch.as_tensor(labels).cpu().to(torch.int64))


def flip_rate(labels: torch.Tensor | np.ndarray, original: torch.Tensor | np.ndarray) -> float:
    """The share of training rows whose current label differs from the original one (utils.py L83-85)."""
    labels, original = np.asarray(labels), np.asarray(original)
    return float((labels != original).mean()) if len(labels) else 0.0


class XRMTwins(Objective):
    """XRM's twin training as an objective: the training loop's model is twin A, the objective owns twin B
    (`make_network()`, a fresh network of the model's architecture, built as the model is: the official
    code calls its `get_network` twice, main.py L27-28; on the training device) and whose parameters it
    hands to the optimizer (`parameters()`: one optimizer over both twins, main.py L30).

    Each batch: both twins predict the batch (train mode), the loss is `twin_loss` on the rows' current
    labels, then the rows' labels are flipped by `flip_labels` on the same (pre-step) predictions, as the
    official `update` (algorithms.py L109-126: the loss reads the labels before the flips, which use the
    forward pass made before the step). Returned logits: the held-in ones (the loop's training accuracy
    is the held-in twins' on the original labels). Logged: `flip_rate`, the share of the batch's rows
    whose label differs from the original after the batch (over an epoch that reads each row once, the
    loop's size-weighted mean of it is exactly the flip rate at the end of the epoch), and `relabelled`,
    the share the batch's flips changed. `history`: the flip rate after each epoch.

    `labels`: the original training labels, one per row of the train split (`rows` index them);
    `seed`: the generator of the halves (unless `halves` is given) and then of every flip;
    `class_balanced`: draw each epoch's N rows with replacement, weight N / n_y by original class (the
    official CivilComments `balanced_batch`) instead of one shuffled pass.
    The labels follow every batch in order: one process (`data_parallel = False`)."""

    data_parallel = False

    def __init__(self, make_network: Callable[[], nn.Module], labels: np.ndarray, seed: int, *,
                 halves: np.ndarray | None = None, class_balanced: bool = False):
        self.original = torch.as_tensor(np.asarray(labels), dtype=torch.int64).clone()
        self.generator = torch.Generator().manual_seed(int(seed))
        n = len(self.original)
        self.halves = _halves(random_halves(n, self.generator) if halves is None else halves, n)
        self.labels = self.original.clone()
        self.twin_b = make_network()
        self.class_balanced = class_balanced
        self.history: list[float] = []

    def parameters(self) -> list[nn.Parameter]:
        return list(self.twin_b.parameters())

    def epoch_data(self, data: Split, generator: torch.Generator) -> tuple[Split, torch.Generator | None]:
        self.twin_b.train()  # the loop sets twin A to train mode; twin B with it
        if not self.class_balanced:
            return data, generator
        counts = torch.bincount(self.original).double()
        weights = (len(self.original) / counts)[self.original]
        rows = torch.multinomial(weights, len(self.original), replacement=True, generator=generator).numpy()
        return ResampledSplit(data, rows), None

    def batch_loss(self, network: nn.Module, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                   rows: np.ndarray, amp: MixedPrecision) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        rows = torch.as_tensor(np.asarray(rows), dtype=torch.int64)
        if not torch.equal(targets.detach().cpu().to(torch.int64), self.original[rows]):
            raise ValueError("the batch's targets are not the original labels of its rows: XRMTwins was built "
                             "for another training split")
        with amp.autocast():
            logits_a, logits_b = network(inputs), self.twin_b(inputs)
        halves, current = self.halves[rows], self.labels[rows]
        loss = twin_loss(logits_a, logits_b, halves, current.to(targets.device))
        flipped = flip_labels(logits_a, logits_b, halves, current, self.generator)
        self.labels[rows] = flipped
        logged = {"flip_rate": (flipped != self.original[rows]).float().mean(),
                  "relabelled": (flipped != current).float().mean()}
        return held_in_logits(logits_a, logits_b, halves), loss, logged

    def flip_rate(self) -> float:
        """The share of training rows whose label is flipped now (utils.py L83-85)."""
        return flip_rate(self.labels, self.original)

    def end_epoch(self, model: nn.Module, device: torch.device) -> None:
        self.history.append(self.flip_rate())

    def state_dict(self) -> dict:
        """The current labels, the halves, the generator, twin B's weights and the flip-rate history (the
        official checkpoint keeps the first two beside the twins, utils.py L70-72)."""
        return {"labels": self.labels.clone(), "halves": self.halves.clone(), "generator": self.generator.get_state(),
                "twin_b": {name: value.detach().clone() for name, value in self.twin_b.state_dict().items()},
                "history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        if not torch.equal(state["halves"], self.halves):  # as the official resume asserts (utils.py L57-58)
            raise ValueError("the saved halves differ from this run's: another seed or another training split")
        self.labels = state["labels"].clone()
        self.generator.set_state(state["generator"])
        self.twin_b.load_state_dict(state["twin_b"])
        self.history = list(state["history"])

    def summary(self) -> dict:
        return {"flip_rate": round(self.flip_rate(), 6), "flipped_labels": int((self.labels != self.original).sum()),
                "flip_rate_per_epoch": [round(rate, 6) for rate in self.history],
                "half_sizes": torch.bincount(self.halves, minlength=2).tolist()}


def final_flip_rate(history: Sequence[float], degenerate: bool = False) -> float:
    """A run's score under the official label-free rule: its flip rate after the last step (the last
    value logged, utils.py L153), 0 for a run whose annotation is degenerate (main.py L56-57 logs 0 last,
    utils.py L79-81)."""
    if degenerate or not len(history):
        return 0.0
    return float(history[-1])


def select_by_flip_rate(histories: Sequence[Sequence[float]],
                        degenerate: Sequence[bool] | None = None) -> tuple[int, int]:
    """(run, epoch), both 0-based: among runs of the twins (hyperparameter combinations, given in order,
    each its per-epoch flip-rate history), the one of the highest final flip rate (the first on a tie:
    `np.argmax` over the combinations in order, utils.py L182-188, L210-213), and its last epoch: no
    early stopping, the twins at the end of training annotate the data (main.py L45-55, utils.py
    L149-150)."""
    if not histories:
        raise ValueError("no runs to select from")
    degenerate = degenerate if degenerate is not None else [False] * len(histories)
    scores = [final_flip_rate(history, bad) for history, bad in zip(histories, degenerate, strict=True)]
    run = int(np.argmax(scores))
    return run, len(histories[run]) - 1


def cross_mistake_annotation(logits_a, logits_b, labels, halves=None, *, rule: str = "either") -> np.ndarray:
    """Each row's environment, int64 0/1, from the twins' logits (eval mode) and its *original* label.

    `rule="either"` (the official one, for the training and the validation rows alike: algorithms.py
    L136-138, main.py L51-53): 1 where twin A's or twin B's argmax differs from the label. `halves` must
    then be None (the official rule does not read them). `rule="held_out"` (not official): 1 where the
    twin that holds the row out misclassifies it; `halves` says which twin trains on each row."""
    logits_a, logits_b = (torch.as_tensor(np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x))
                          for x in (logits_a, logits_b))
    labels = torch.as_tensor(np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels),
                             dtype=torch.int64)
    if logits_a.shape != logits_b.shape or logits_a.ndim != 2 or len(logits_a) != len(labels):
        raise ValueError(f"logits {tuple(logits_a.shape)} and {tuple(logits_b.shape)} for {len(labels)} labels")
    if rule == "either":
        if halves is not None:
            raise ValueError("the official cross-mistake rule reads no halves (either twin's mistake, for "
                             "training and validation rows alike); rule='held_out' reads them")
        mistakes = (logits_a.argmax(1) != labels) | (logits_b.argmax(1) != labels)
    elif rule == "held_out":
        if halves is None:
            raise ValueError("rule='held_out' needs the halves")
        mistakes = held_out_logits(logits_a, logits_b, halves).argmax(1) != labels
    else:
        raise ValueError(f"unknown rule {rule!r} (known: {', '.join(RULES)})")
    return mistakes.to(torch.int64).numpy()


def annotate(model_a: nn.Module, model_b: nn.Module, data: Split, batch_size: int, device: torch.device,
             desc: str = "XRM cross-mistakes") -> np.ndarray:
    """The official environment of every row of `data` (a train or val split, read in order, its original
    labels): both twins' eval-mode logits (algorithms.py L46-66), then `cross_mistake_annotation`."""
    logits_a = predict_logits(model_a, data, batch_size, device, f"{desc} (twin A)")
    logits_b = predict_logits(model_b, data, batch_size, device, f"{desc} (twin B)")
    return cross_mistake_annotation(logits_a, logits_b, data.labels)


def is_degenerate(envs: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray]) -> bool:
    """Whether some split's annotation leaves a class in one environment only: the official check that
    each class present splits into 2 environments in train and val, else no file is written and the run
    scores a flip rate of 0 (utils.py L170-179, main.py L56-57)."""
    for split in envs:
        y, env = np.asarray(labels[split], dtype=np.int64), np.asarray(envs[split], dtype=np.int64)
        if len(np.unique(2 * y + env)) != 2 * len(np.unique(y)):
            return True
    return False


def xrm_groups(envs: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray], class_names: Sequence[str],
               description: str = "XRM cross-mistakes: per class, rows neither twin misclassifies (env 0) and "
                                  "rows a twin misclassifies (env 1)") -> Groups:
    """The groups file of an XRM annotation (`envs`: "train" and "val", 0/1 per row): per class c, group
    2c its env-0 rows and group 2c + 1 its env-1 rows (the twins' mistakes, the named minority), as the
    official phase 2 numbers them (num_envs * y + env, datasets.py L154-162). No group labels."""
    names = [f"{name}_{kind}" for name in class_names for kind in ("agree", "mistake")]
    classes = [c for c in range(len(class_names)) for _ in range(2)]
    ids = {}
    for split in ("train", "val"):
        env = np.asarray(envs[split], dtype=np.int64)
        if len(env) and not np.isin(env, (0, 1)).all():
            raise ValueError(f"{split} environments must be 0 or 1")
        ids[split] = 2 * np.asarray(labels[split], dtype=np.int64) + env
    return make_groups(ids, labels, names, classes, inference="xrm", description=description,
                       uses_group_labels=False, minority=range(1, len(names), 2), title=TITLE)


def infer(config: XrmConfig, device: torch.device, data: str | Path, *, stage: str, journal_at: str | Path,
          live_dir: str | Path) -> tuple[Groups, dict, TrainingRun]:
    """XRM's phase 1 on the one training function: the twins (`XRMTwins`, twin A the run's model, twin B the
    objective's, one optimizer over both) for `config.epochs` epochs on the eval view (no augmentation, as the
    official transforms), logged to dvclive in `live_dir` (`train/flip_rate` each epoch) and journaled beside
    `journal_at`; then the cross-mistake annotation of every training and validation row (the official
    either-twin rule). Returns the groups, a summary (the flip rate, per-epoch history, the halves, whether
    the annotation is degenerate by the official check) and the run."""
    prepared = PreparedFile(data)
    (labels,) = prepared.vectors("train", "labels")
    twins: list[XRMTwins] = []

    def twin_b() -> nn.Module:  # built as twin A is (the official get_network, twice: main.py L27-28)
        return initial_model(config.arch, prepared.num_classes, config.pretrained, config.weights_path, device)

    def objective_for(model: nn.Module, val: Split) -> XRMTwins:
        twins.append(XRMTwins(twin_b, labels, config.seed, class_balanced=config.class_balanced))
        return twins[-1]

    run = start_training(config, device, data, train_view="eval", objective_for=objective_for)
    finish_training(run, stage=stage, keep=Keep(info={}, score=NO_VALIDATION, select_by=LAST), live_dir=live_dir,
                    name="XRM twins", journal_at=journal_at)
    envs = {"train": annotate(run.model, twins[0].twin_b, run.train, config.eval_batch_size, device, "XRM train"),
            "val": annotate(run.model, twins[0].twin_b, run.val, config.eval_batch_size, device, "XRM val")}
    split_labels = {"train": run.train.labels, "val": run.val.labels}
    degenerate = is_degenerate(envs, split_labels)
    groups = xrm_groups(envs, split_labels, run.prepared.class_names,
                        f"XRM cross-mistakes: per class, rows neither twin misclassifies and rows a twin "
                        f"misclassifies, after {config.epochs} epoch(s) of the twins (seed {config.seed})")
    summary = {**twins[0].summary(), "degenerate": degenerate,
               "mistakes": {split: int(env.sum()) for split, env in envs.items()},
               "mistake_fraction": {split: float(env.mean()) for split, env in envs.items()}}
    return groups, summary, run
