"""`sclft` CLI whose processes all die (exit 137, like SIGKILL) right after the checkpoint of epoch
$SCLFT_TEST_DIE_AFTER_EPOCH is complete; used by the multi-process resume test under `accelerate launch`."""

import importlib
import os
import sys

train_mod = importlib.import_module("sclft.training.loop")
_save = train_mod.save_checkpoint


def save_then_die(accelerator, out, model, epoch, *args):
    path = _save(accelerator, out, model, epoch, *args)
    if epoch == int(os.environ["SCLFT_TEST_DIE_AFTER_EPOCH"]):
        os._exit(137)
    return path


train_mod.save_checkpoint = save_then_die

if __name__ == "__main__":
    from sclft.cli import main

    sys.exit(main(sys.argv[1:]))
