"""Training: the loop `train_erm` and `finetune` share, prediction, seeding and devices."""
