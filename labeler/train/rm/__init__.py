"""Reward models: train one on preference shards, load it, score conversations with it.

- `losses`: Bradley-Terry with soft or hard targets, optional TRL-style margin (pure functions);
- `salmon`: principle-conditioned targets (SALMON) and the system message that shows the principles;
- `data`: preference pairs from run folders, the eval split, label kinds, batches;
- `model`: the reward read at the last real token; `load_reward_model(dir).score(conversations)`;
- `heads`: the heads of a model with one per principle, read from its folder, and weightings of them;
- `train`: `train_reward_model(RMTrainConfig)`, one loop; `checkpoint`: resumable checkpoints;
- `score`: accuracy on human-labelled pairs (`labeler score-rm`).

Submodules are imported on use: `labeler.train.rm.model` and `labeler.train.rm.train` pull in torch and transformers.
"""
