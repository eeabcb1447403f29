"""What every trainer shares: config fields, checkpoints, the metrics log, resuming, the tokenizer.

The reward-model trainer (`labeler.rm.train`) and PPO (`labeler.ppo.train`) both use these, so their
checkpoints, logs and resume checks behave the same way and cannot drift apart.
"""
