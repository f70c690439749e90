"""transferlab's Optuna sweeper for Hydra (current Optuna; `hydra/sweeper=transferlab_optuna`)."""
