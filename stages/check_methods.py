"""Stage `check_methods`: the names in the `methods` param checked before any method's stage runs.

DVC checks that the params a stage declares exist before it runs the stage's command, so an unknown name
in `methods` (`-S methods.masking=[masktune,gradcam]`, a pair's `trainer: dfr`) would surface as DVC's
"Parameters 'gradcam' are missing from 'params.yaml'". Every method's stage depends on this stage's
output, so DVC runs this one first whenever `methods` changes: it validates params.yaml (an unknown name
ends it with one line listing the valid ones) and writes a constant stamp, so that a valid change reruns
no method's stage through it.
"""
from __future__ import annotations

import argparse

from masktune.config.stages import load_stage_config
from masktune.errors import run_stage
from masktune.io.files import write_bytes_atomically

STAMP = b"every name in params.yaml's methods is a known method (stage check_methods)\n"


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, help="the stamp every method's stage depends on")
    args = parser.parse_args()

    load_stage_config("check_methods")  # validates params.yaml, methods included
    write_bytes_atomically(args.out, STAMP)


if __name__ == "__main__":
    main()
