"""What every trainer shares: config fields, checkpoints, the metrics log, resuming, the tokenizer.

The reward-model trainer (`labeler.train.rm.train`) and PPO (`labeler.train.ppo.train`) both use these, so their
checkpoints, logs and resume checks behave the same way and cannot drift apart.
"""
