"""Stage `check_methods`: the names `foreach` stages are made of, checked before any of those stages runs.

DVC checks that the params a stage declares exist before it runs the stage's command, so an unknown name
in `methods` (`-S methods.masking=[masktune,gradcam]`, a pair's `trainer: dfr`) would surface as DVC's
"Parameters 'gradcam' are missing from 'params.yaml'". And DVC pastes a `foreach` stage's name into its
command line unquoted, so a pair named `x;touch PWNED` would reach a shell. This stage validates
params.yaml (an unknown name ends it with one line listing the valid ones; a pair's name must be a
lower-case identifier, `fields.Pairs`) and writes one constant stamp per valid name,
`<out>/<name>` (the method names and pair names of `methods`, the control's seed offsets). Every `foreach`
stage depends on its own name's stamp: DVC runs this stage first whenever the names change, a valid change
reruns no stage through it, and a stage whose name has no stamp is refused by DVC itself ("No such file"),
before its command is run, even by `dvc repro -s <that stage>`.
"""
from __future__ import annotations

import argparse

from masktune.config.stages import load_stage_config
from masktune.errors import run_stage
from masktune.io.files import atomic_directory

STAMP = b"a valid name of params.yaml (stage check_methods)\n"


def checked_names(config) -> list[str]:
    """Every name a `foreach` stage is made of: the methods of every kind, the pairs, the seed offsets."""
    names = {str(name) for kind in config.methods.values() for name in kind}
    return sorted(names | {str(offset) for offset in config.control_seed_offsets})


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, help="folder of stamps, one per valid name")
    args = parser.parse_args()

    config = load_stage_config("check_methods")  # validates params.yaml, methods included
    with atomic_directory(args.out) as folder:
        for name in checked_names(config):
            (folder / name).write_bytes(STAMP)


if __name__ == "__main__":
    main()
