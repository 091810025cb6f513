"""Training: reversed instruction tuning, SFT and DPO (trl + accelerate), checkpoints and the DPO reference store."""
