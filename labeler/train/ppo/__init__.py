"""PPO against a reward model or a rule, with a per-token KL penalty to the starting policy (LoRA by default).

Entry points: `labeler.train.ppo.config.PPOConfig` and `labeler.train.ppo.train.train_ppo(config) -> Path`;
rewards in `labeler.train.ppo.rewards`; the arithmetic (GAE, whitening, KL estimators, clipped losses) as pure
functions in `labeler.train.ppo.math`. This package imports nothing heavy itself, so that the CLI starts fast.
"""
